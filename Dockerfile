# gpucal on a CUDA runtime image.  Build:  docker build -t gpucal .
# Run:    docker run --gpus all -v "$PWD":/data gpucal roman_elp --backend=gpu /data/<file>_uncal.asdf
#
# Kernel cache: the build compiles every kernel with NVRTC for sm_80 and sm_90 (a build
# with a broken kernel fails here), but CuPy's cubin cache can only be filled on a GPU
# (docker build has none).  Keep CUPY_CACHE_DIR on a volume and fill it once with
#   docker run --gpus all -v gpucal-kernels:/opt/cupy-cache --entrypoint gpucal gpucal kernels
# then mount the same volume in every run; without it, each container compiles the
# kernels on first use (a few seconds).
FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    CUPY_CACHE_DIR=/opt/cupy-cache \
    CRDS_PATH=/crds \
    CRDS_SERVER_URL=https://roman-crds.stsci.edu

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/gpucal
COPY pyproject.toml README.md ./
COPY gpucal ./gpucal
COPY cpu_fallback ./cpu_fallback
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install '.[cuda12]' \
 && mkdir -p "$CUPY_CACHE_DIR" /crds
ENV PATH=/opt/venv/bin:$PATH
RUN gpucal kernels --arch 80,90 --no-warm
VOLUME ["/opt/cupy-cache"]

WORKDIR /data
ENTRYPOINT ["strun"]
CMD ["roman_elp", "-h"]
