"""Animations built on the engine: zoom / pan / rotate feedback videos and video restyling."""
