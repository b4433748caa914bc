"""Stub ``comfy_api`` package."""
