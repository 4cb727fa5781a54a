"""Selectors: one interface, one registry. ``dataselect methods`` lists them.

Each selector's module is imported when the selector is first used (the registry reads the modules' ``@register`` classes from their source: ``base._builtin``).
"""

from dataselect.selectors.base import REGISTRY, Selector, build_selector, get_selector, register

__all__ = ["REGISTRY", "Selector", "build_selector", "get_selector", "register"]
