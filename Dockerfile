# gpucal on a CUDA runtime image.  Build:  docker build -t gpucal .
# Run:    docker run --gpus all -v "$PWD":/data gpucal roman_elp --backend=gpu /data/<file>_uncal.asdf
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

WORKDIR /data
ENTRYPOINT ["strun"]
CMD ["roman_elp", "-h"]
