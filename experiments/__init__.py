"""Research studies that informed the product's defaults, kept runnable but out of the product:
the plugin zip does not ship this folder, and nothing in ``backend/`` imports it.
Write-ups with their figures: docs/experiments/."""
