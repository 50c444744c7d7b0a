"""garo_optax: self-tuning optimizers as composable optax transformations."""

from garo_optax._src.autosgm import ScaleByAutoSgmState as ScaleByAutoSgmState
from garo_optax._src.autosgm import autosgm as autosgm
from garo_optax._src.autosgm import from_asgm_config as from_asgm_config
from garo_optax._src.autosgm import scale_by_autosgm as scale_by_autosgm
from garo_optax._src.clara import ScaleByAdamClaraState as ScaleByAdamClaraState
from garo_optax._src.clara import ScaleByClaraState as ScaleByClaraState
from garo_optax._src.clara import adam_clara as adam_clara
from garo_optax._src.clara import adam_clara_reference as adam_clara_reference
from garo_optax._src.clara import clara_sgd as clara_sgd
from garo_optax._src.clara import scale_by_clara as scale_by_clara
from garo_optax._src.clara_seed import adam_clara_global as adam_clara_global
from garo_optax._src.clara_seed import adam_clara_local as adam_clara_local
from garo_optax._src.clara_seed import adam_clara_smoothed as adam_clara_smoothed
from garo_optax._src.controller import GaroController as GaroController
from garo_optax._src.controller import init_controller as init_controller
from garo_optax._src.garo import ScaleByGaroState as ScaleByGaroState
from garo_optax._src.garo import garo as garo
from garo_optax._src.garo import scale_by_garo as scale_by_garo
from garo_optax._src.hyperparams import hyperparams as hyperparams
from garo_optax._src.lowpass import FilterResponse as FilterResponse
from garo_optax._src.lowpass import QuadraticStability as QuadraticStability
from garo_optax._src.lowpass import lowpass_response as lowpass_response
from garo_optax._src.lowpass import max_stable_step as max_stable_step
from garo_optax._src.lowpass import quadratic_stability as quadratic_stability
from garo_optax._src.lr_finder import LRFinderResult as LRFinderResult
from garo_optax._src.lr_finder import lr_finder as lr_finder
from garo_optax._src.lr_finder import plot_lr_finder as plot_lr_finder
from garo_optax._src.pretrained import pretrained as pretrained
from garo_optax._src.pretrained import pretrained_info as pretrained_info
from garo_optax._src.schedules import window_schedule as window_schedule

__version__ = "0.1.0"

_DEPRECATED = {"GaroState": ("ScaleByGaroState", ScaleByGaroState)}


def __getattr__(name):
    # Old names keep working, with a DeprecationWarning naming the new one.
    if name in _DEPRECATED:
        import warnings

        new_name, value = _DEPRECATED[name]
        warnings.warn(
            f"garo_optax.{name} is deprecated: use garo_optax.{new_name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value
    raise AttributeError(f"module 'garo_optax' has no attribute {name!r}")


__all__ = (
    "FilterResponse",
    "GaroController",
    "LRFinderResult",
    "QuadraticStability",
    "ScaleByAdamClaraState",
    "ScaleByAutoSgmState",
    "ScaleByClaraState",
    "ScaleByGaroState",
    "adam_clara",
    "adam_clara_global",
    "adam_clara_local",
    "adam_clara_reference",
    "adam_clara_smoothed",
    "autosgm",
    "clara_sgd",
    "from_asgm_config",
    "garo",
    "hyperparams",
    "init_controller",
    "lowpass_response",
    "lr_finder",
    "max_stable_step",
    "plot_lr_finder",
    "pretrained",
    "pretrained_info",
    "quadratic_stability",
    "scale_by_autosgm",
    "scale_by_clara",
    "scale_by_garo",
    "window_schedule",
)
