"""REST API of the labeling app (DRF views, serializers and URLconfs)."""
