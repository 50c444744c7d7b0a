"""garo_optax: self-tuning optimizers as composable optax transformations."""

from garo_optax._src.clara import adam_clara as adam_clara
from garo_optax._src.clara import adam_clara_global as adam_clara_global
from garo_optax._src.clara import adam_clara_local as adam_clara_local
from garo_optax._src.clara import adam_clara_reference as adam_clara_reference
from garo_optax._src.clara import adam_clara_smoothed as adam_clara_smoothed
from garo_optax._src.clara import clara_sgd as clara_sgd
from garo_optax._src.clara import scale_by_clara as scale_by_clara
from garo_optax._src.clara import ScaleByClaraState as ScaleByClaraState

__version__ = "0.1.0"

__all__ = (
    "ScaleByClaraState",
    "adam_clara",
    "adam_clara_global",
    "adam_clara_local",
    "adam_clara_reference",
    "adam_clara_smoothed",
    "clara_sgd",
    "scale_by_clara",
)
