"""The service: the grpc.aio adapter over the runtime.

Servicer (convert -> runtime -> convert), protobuf <-> domain conversion, the
one table from domain errors to gRPC statuses (`status`), interceptors, and
the server's composition root (`server`) with health checking and reflection.
The only package that imports the generated `flou_grpc._proto` modules.
"""
