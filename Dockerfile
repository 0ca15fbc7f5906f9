# gpucal on a CUDA base image.  Build:  docker build -t gpucal .
# Run:    docker run --gpus all -v "$PWD":/data gpucal roman_elp --backend=gpu /data/<file>_uncal.asdf
#
# CUDA: the image brings the driver interface only (a -base image); CuPy, NVRTC, cuFFT and the
# CUDA runtime headers CuPy's own kernels include come as wheels (the cuda12 extra, pinned to
# the image's CUDA minor).  The build checks that CuPy's compiler finds those headers and
# compiles its element-wise kernels, as on a GPU (`gpucal kernels`; a build without them fails).
#
# Kernel cache: the build compiles every kernel with NVRTC for sm_80 and sm_90 (a build
# with a broken kernel fails here), but CuPy's cubin cache can only be filled on a GPU
# (docker build has none).  Keep CUPY_CACHE_DIR on a volume and fill it once with
#   docker run --gpus all -v gpucal-kernels:/opt/cupy-cache --entrypoint gpucal gpucal kernels
# then mount the same volume in every run; without it, each container compiles the
# kernels on first use (a few seconds).
FROM nvidia/cuda:12.6.3-base-ubuntu24.04

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
 && /opt/venv/bin/pip install '.[cuda12]' 'cuda-toolkit==12.6.*' \
 && mkdir -p "$CUPY_CACHE_DIR" /crds
ENV PATH=/opt/venv/bin:$PATH
RUN gpucal kernels --arch 80,90 --no-warm
VOLUME ["/opt/cupy-cache"]

WORKDIR /data
ENTRYPOINT ["strun"]
CMD ["roman_elp", "-h"]
