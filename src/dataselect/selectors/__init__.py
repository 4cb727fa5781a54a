"""Selectors: one interface, one registry. ``dataselect methods`` lists them."""

from dataselect.selectors import kmeans_sensitivity, loss, rds_plus, uniform  # noqa: F401  (registration)
from dataselect.selectors.base import REGISTRY, Selector, build_selector, get_selector, register

__all__ = ["REGISTRY", "Selector", "build_selector", "get_selector", "register"]
