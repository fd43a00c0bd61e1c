"""Registers cotprompt's own components through the same hooks as third-party plugins."""

from __future__ import annotations

from cotprompt.plugins.hookspecs import Register, hookimpl


@hookimpl
def register_backbones(register: Register) -> None:
    """Backbone ``open_clip``."""
    from cotprompt.backbones.open_clip_backbone import OpenCLIPBackbone

    register(OpenCLIPBackbone)


@hookimpl
def register_generators(register: Register) -> None:
    """Generators ``rule-based``, ``lm``, ``gpt2`` and ``descriptions``.

    ``lm`` and ``gpt2`` register without ``transformers`` installed (importing them does not
    import it); building one without it raises a ConfigError saying how to install ``transformers``.
    """
    from cotprompt.generators.descriptions import DescriptionsGenerator
    from cotprompt.generators.lm import GPT2Generator, LMGenerator
    from cotprompt.generators.rule_based import RuleBasedGenerator

    for generator in (RuleBasedGenerator, LMGenerator, GPT2Generator, DescriptionsGenerator):
        register(generator)


@hookimpl
def register_tuners(register: Register) -> None:
    """Tuners ``coop``, ``cocoop``, ``cotpt``, ``vpt`` and ``multimodal``."""
    from cotprompt.tuners import CoCoOpTuner, CoOpTuner, CoTPTTuner, MultimodalTuner, VPTTuner

    for tuner in (CoOpTuner, CoCoOpTuner, CoTPTTuner, VPTTuner, MultimodalTuner):
        register(tuner)


@hookimpl
def register_aggregators(register: Register) -> None:
    """Aggregators ``mean``, ``attention`` and ``adaptive``."""
    from cotprompt.aggregators import AdaptiveAggregator, AttentionAggregator, MeanAggregator

    for aggregator in (MeanAggregator, AttentionAggregator, AdaptiveAggregator):
        register(aggregator)


@hookimpl(specname="register_generators")
def register_task_generators(register: Register) -> None:
    """Generators ``caption`` (retrieval) and ``question-answer`` (VQA)."""
    from cotprompt.tasks.generators import CaptionGenerator, QuestionAnswerGenerator

    for generator in (CaptionGenerator, QuestionAnswerGenerator):
        register(generator)
