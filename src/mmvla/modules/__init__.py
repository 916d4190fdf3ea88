"""Building blocks: encoders, attention, fusion designs, temporal memory, action heads."""
