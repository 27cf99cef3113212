"""Settings: environment variables, the optional TOML file and the shipped price catalog."""

from tollway.config.routes import ModelRoute, Provider
from tollway.config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "ModelRoute", "Provider", "Settings", "load_settings"]
