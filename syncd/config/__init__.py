"""The one config file: daemon settings plus the DBAs' document mappings.

`load_config(path)` / `parse_config(text)` give a validated `SyncdConfig` or raise one
`ConfigError` listing every problem with file, line and suggestion. The models live in
`base` (shared pieces), `settings` (the daemon), `documents` (the DBAs' mappings),
`conditions` (the condition language's schema) and `loader` (the root model and YAML
loading); their public names are re-exported here.
"""

from syncd.config.base import *  # noqa: F403
from syncd.config.conditions import Condition, Scalar, compact_dump

__all__ = ["Condition", "Scalar", "compact_dump"]
from syncd.config.documents import *  # noqa: F403
from syncd.config.loader import *  # noqa: F403
from syncd.config.settings import *  # noqa: F403
