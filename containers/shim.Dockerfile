# The algorithm image as grand-challenge.org runs it: wrapped by its runner, sagemaker-shim
# (built by submit.sh for its test run; never uploaded). The platform appends one layer with a static
# build of the shim at /sagemaker-shim, the folders /input (0755), /output and /tmp (0777), makes the
# shim the entrypoint with an empty CMD, runs as root, and passes the image's own ENTRYPOINT, CMD and
# USER in GRAND_CHALLENGE_COMPONENT_{ENTRYPOINT_B64J,CMD_B64J,USER} (rse-grand-challenge,
# components/tasks.py, _mutate_container_image). Here the same shim version comes from PyPI, in its
# own venv on the image's Python, from wheels submit.sh downloaded: the build needs no network.
ARG IMAGE
FROM --platform=linux/amd64 ${IMAGE}
ARG ENTRYPOINT_B64J
ARG CMD_B64J
ARG COMPONENT_USER
USER 0
COPY wheels/ /tmp/shim-wheels/
# --ignore-requires-python: the shim declares Python 3.12 only; its pinned version runs on 3.11.
RUN python3 -m venv /opt/sagemaker-shim \
    && /opt/sagemaker-shim/bin/python -m pip install --no-index --no-cache-dir --disable-pip-version-check \
        --ignore-requires-python --find-links /tmp/shim-wheels -r /tmp/shim-wheels/requirements.txt \
    && rm -rf /tmp/shim-wheels \
    && ln -s /opt/sagemaker-shim/bin/sagemaker-shim /sagemaker-shim \
    && mkdir -p /input /output /tmp && chmod 0755 /input && chmod 0777 /output /tmp
ENV GRAND_CHALLENGE_COMPONENT_ENTRYPOINT_B64J=${ENTRYPOINT_B64J} \
    GRAND_CHALLENGE_COMPONENT_CMD_B64J=${CMD_B64J} \
    GRAND_CHALLENGE_COMPONENT_USER=${COMPONENT_USER}
ENTRYPOINT ["/sagemaker-shim"]
CMD []
