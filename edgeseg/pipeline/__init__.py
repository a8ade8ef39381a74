"""Camera pipelines: frame sources, the threaded decode/infer/encode pipeline, sinks, overlays, and
deployment configs for DeepStream and Triton."""
