"""Settings: environment variables, the optional TOML file and the shipped price catalog."""

from tollway.config.settings import ConfigError, Settings, load_settings
from tollway.config.routes import ModelRoute, Provider

__all__ = ["ConfigError", "ModelRoute", "Provider", "Settings", "load_settings"]
