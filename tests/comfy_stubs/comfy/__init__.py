"""Stub ``comfy`` package."""
