import CNISpec
