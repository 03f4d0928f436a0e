# A model image: a model directory (the build context's model/) on the runner image. The
# runner finds shepherd-runner.yaml in its working directory and imports the model from there.
# Built by `shepherd image model DIR NAME:VERSION`.
ARG RUNNER
FROM ${RUNNER}
COPY model/ /model/
WORKDIR /model
