"""The JSON API (DRF): thin views over labeling.services and labeling.selectors."""
