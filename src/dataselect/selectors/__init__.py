"""Selectors: one interface, one registry. ``dataselect methods`` lists them."""

from dataselect.selectors import (  # noqa: F401  (registration)
    hierarchical_kmeans,
    kmeans_sensitivity,
    loss,
    rds_plus,
    uniform,
)
from dataselect.selectors.base import REGISTRY, Selector, build_selector, get_selector, register

__all__ = ["REGISTRY", "Selector", "build_selector", "get_selector", "register"]
