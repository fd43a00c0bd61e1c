"""Prompt generators: turn a task's labels into a chain of prompt texts."""

from cotprompt.generators.rule_based import RuleBasedConfig, RuleBasedGenerator, StepTemplates

__all__ = ["RuleBasedConfig", "RuleBasedGenerator", "StepTemplates"]
