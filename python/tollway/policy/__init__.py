"""Key policy: spend windows that reset, rate limits, allowed models, credit (see ``Policy``)."""
