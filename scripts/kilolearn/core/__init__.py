"""The model and its numpy twin: graphs and layers (model), float32 and int8 training
bit for bit with the engine (reference, quant), update policies (selective), the
replay buffer's twin (replay), data sets (data)."""
