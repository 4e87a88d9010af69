"""Generated provider.v1 gRPC stubs (see scripts/generate_proto.py); do not edit."""
