"""``from jobtrace import web``: the same module as :mod:`jobtrace.compat.osprofiler.web`.

Kept at the top level because OSProfiler users switch with one import; patching a name here
patches it there, since both names refer to one module object.
"""

import sys

from jobtrace.compat.osprofiler import web as _module
from jobtrace.compat.osprofiler.web import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _module
