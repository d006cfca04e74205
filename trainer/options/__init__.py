"""The six trading options and the seed's termination curve."""

from trainer.options.termination import sigmoid_termination_prob
from trainer.options.trading_options import (
    OPTION_CLASSES,
    ClosePositionOption,
    OpenLongOption,
    OpenShortOption,
    ScalpOption,
    TradingOption,
    TrendFollowOption,
    WaitOption,
    availability_mask,
    build_options,
    termination_rules,
)

__all__ = [
    "OPTION_CLASSES",
    "ClosePositionOption",
    "OpenLongOption",
    "OpenShortOption",
    "ScalpOption",
    "TradingOption",
    "TrendFollowOption",
    "WaitOption",
    "availability_mask",
    "build_options",
    "sigmoid_termination_prob",
    "termination_rules",
]
