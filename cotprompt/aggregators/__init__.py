"""Aggregators: combine the K step features into logits."""

from cotprompt.aggregators.adaptive import AdaptiveAggregator, AdaptiveAggregatorConfig
from cotprompt.aggregators.attention import AttentionAggregator, AttentionAggregatorConfig
from cotprompt.aggregators.mean import MeanAggregator, MeanAggregatorConfig

__all__ = [
    "AdaptiveAggregator",
    "AdaptiveAggregatorConfig",
    "AttentionAggregator",
    "AttentionAggregatorConfig",
    "MeanAggregator",
    "MeanAggregatorConfig",
]
