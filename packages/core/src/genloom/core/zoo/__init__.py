"""Model zoo: named presets, save/load of pretrained folders, weight sources, the family registry."""

from genloom.core.zoo.preset import Preset, WeightSource
from genloom.core.zoo.pretrained import (
    build_from_config,
    count_parameters,
    from_pretrained,
    load_component,
    load_weights_into,
    read_config,
    save_preset_folder,
    save_pretrained,
)
from genloom.core.zoo.registry import (
    get_family,
    get_preset,
    list_families,
    list_presets,
    register_family,
    register_preset,
    unregister_family,
    unregister_preset,
)
from genloom.core.zoo.sources import (
    describe_source,
    download_file,
    genloom_home,
    is_offline,
    resolve_preset_dir,
)

__all__ = [
    "Preset",
    "WeightSource",
    "build_from_config",
    "count_parameters",
    "describe_source",
    "download_file",
    "from_pretrained",
    "genloom_home",
    "get_family",
    "get_preset",
    "is_offline",
    "list_families",
    "list_presets",
    "load_component",
    "load_weights_into",
    "read_config",
    "register_family",
    "register_preset",
    "resolve_preset_dir",
    "save_preset_folder",
    "save_pretrained",
    "unregister_family",
    "unregister_preset",
]
