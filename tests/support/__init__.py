"""Test support: loopback servers, media makers, the kustomize renderer."""
