"""Primitives: the spec and scheme registry, granularity, qparams, observers, quantize, metrics,
packing and number formats. Pure torch; imports nothing from the rest of quantlab."""
