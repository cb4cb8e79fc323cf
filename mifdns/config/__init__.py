"""Configuration: YAML in, typed and validated immutable objects out (STYLE.md habit 12).

The file is parsed at the edge and the resulting :class:`Config` is passed in; nothing reads it
globally. Theory of operation:

1. ``yaml.compose`` gives a node tree with line numbers (SafeLoader semantics: scalars resolve as
   PyYAML resolves YAML 1.1). :class:`_Plain` turns it into plain Python values and remembers, per
   key path (``pvds[1].servers[0]``), the line of the key and of the value.
2. :class:`_Loader` checks those values: the sections are walked generically from the dataclass
   fields and their metadata, the PvD entries from :data:`PVD_KEY_DOCS`. It collects every problem
   instead of stopping at the first. :func:`pvd_spec_from_mapping` runs the same PvD checks on a
   dict that never was YAML (``ctl attach`` with JSON), only without line numbers.
3. Any problem -> one :class:`ConfigError` listing them all in file order, one self-contained line
   each (``mifdns.yaml:14: pvds[1].servers[0]: '10.0.0.300': not an IP address``).

Every key carries a ``doc``; :func:`config_reference_markdown` renders them as docs/config.md
(regenerate with ``python -m mifdns.config > docs/config.md``; a unit test keeps them equal).

Modules: ``model`` (the dataclasses and the PvD key table), ``values`` (YAML nodes -> values
with line numbers), ``loader`` (the checks and the entry points), ``reference`` (the docs).
"""

from .loader import (
    apply_env,
    load_config,
    looping_servers,
    loops_back,
    parse_config,
    pvd_spec_from_mapping,
)
from .model import (
    ENV_VARS,
    PVD_KEY_DOCS,
    CacheConfig,
    Config,
    LimitsConfig,
    ListenAddr,
    MetricsConfig,
    ResolvConfConfig,
    UpstreamConfig,
    default_config,
)
from .reference import config_reference_markdown

__all__ = [
    "CacheConfig", "Config", "LimitsConfig", "ListenAddr", "MetricsConfig", "ResolvConfConfig",
    "UpstreamConfig", "ENV_VARS", "PVD_KEY_DOCS", "apply_env", "config_reference_markdown",
    "default_config", "load_config",
    "looping_servers", "loops_back", "parse_config", "pvd_spec_from_mapping",
]  # fmt: skip
