"""TimesNet-Gen reproduction: site-specific strong-motion generation and its evaluation."""

__version__ = "0.1.0"
