"""The REST API (DRF): thin views over access.services and access.selectors."""
