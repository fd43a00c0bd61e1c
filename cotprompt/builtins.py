"""Registers cotprompt's own components through the same hooks as third-party plugins."""

from __future__ import annotations

from cotprompt.hookspecs import Register, hookimpl


@hookimpl
def register_backbones(register: Register) -> None:
    """Backbone ``open_clip``."""
    from cotprompt.backbones.open_clip_backbone import OpenCLIPBackbone

    register(OpenCLIPBackbone)


@hookimpl
def register_generators(register: Register) -> None:
    """Generator ``rule-based``."""
    from cotprompt.generators.rule_based import RuleBasedGenerator

    register(RuleBasedGenerator)


@hookimpl
def register_tuners(register: Register) -> None:
    """Tuners ``coop``, ``cocoop`` and ``cotpt``."""
    from cotprompt.tuners import CoCoOpTuner, CoOpTuner, CoTPTTuner

    for tuner in (CoOpTuner, CoCoOpTuner, CoTPTTuner):
        register(tuner)


@hookimpl
def register_aggregators(register: Register) -> None:
    """Aggregators ``mean``, ``attention`` and ``adaptive``."""
    from cotprompt.aggregators import AdaptiveAggregator, AttentionAggregator, MeanAggregator

    for aggregator in (MeanAggregator, AttentionAggregator, AdaptiveAggregator):
        register(aggregator)
