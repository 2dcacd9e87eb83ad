"""FlatBuffers code generated from escp/protocol/schema/escp.fbs by `nox -s flatc`."""
