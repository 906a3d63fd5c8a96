"""mtlutils: the package behind the notebooks on multi-task and adversarial learning in pathology.

Notebooks explain, call and plot; the modules here compute. Import submodules explicitly
(``from mtlutils import data, synthetic``); only :func:`record` and :func:`print_env` are re-exported for brevity.
"""

from mtlutils.core.record import record
from mtlutils.core.runtime import print_env

__all__ = ["print_env", "record"]
__version__ = "0.1.0"
