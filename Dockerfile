# syntax=docker/dockerfile:1
# The three edgefleet images, for people with Docker (or BuildKit, Podman, Kaniko):
#   docker build --target operator  -t edgefleet/operator .
#   docker build --target optimizer -t edgefleet/optimizer .
#   docker build --target sidecar   -t edgefleet/sidecar .
# Without a Docker engine, `make images` assembles equivalent images from the built binaries
# (hack/images.sh) and pushes them by digest.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin edgefleet-operator --bin edgefleet-optimizer \
 && cargo build --profile edge --locked -p edgefleet-sidecar \
 && mkdir -p /out \
 && for b in edgefleet-operator edgefleet-optimizer; do strip -o /out/$b target/release/$b; done \
 && cp target/edge/edgefleet-sidecar /out/

# ONNX Runtime for the optimizer's accuracy gate on onnxruntime device classes, from the same
# PyPI wheel the project pins (hack/requirements.txt).
FROM python:3.11-slim-bookworm AS ort
RUN pip install --no-cache-dir "onnxruntime==1.23.2" \
 && cp "$(python -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[0])')" /libonnxruntime.so

# distroless/cc: glibc, libgcc, libstdc++, CA certificates, user nonroot (65532); no shell.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/edgefleet-operator /usr/local/bin/edgefleet-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/edgefleet-operator"]

FROM gcr.io/distroless/cc-debian12:nonroot AS optimizer
COPY --from=build /out/edgefleet-optimizer /usr/local/bin/edgefleet-optimizer
COPY --from=ort /libonnxruntime.so /usr/local/lib/libonnxruntime.so
ENV ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/edgefleet-optimizer"]

FROM gcr.io/distroless/cc-debian12:nonroot AS sidecar
COPY --from=build /out/edgefleet-sidecar /usr/local/bin/edgefleet-sidecar
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/edgefleet-sidecar"]
