"""Model card templates for published sdfp-hf masks (installed as the package `sdfp_hf.hub_cards`)."""
