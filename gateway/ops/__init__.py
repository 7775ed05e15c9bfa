"""Operating the gateway: health, metrics, alerts."""
