import { describe, expect, it } from "vitest";
import { DockerfileError, parseDockerfile, stepCacheKey } from "./dockerfile.js";
import type { BuildPlan, CommandStep, CopyStep, RunStep, Stage, Step } from "./dockerfile.js";

function stepsOf<K extends Step["kind"]>(stage: Stage, kind: K): Extract<Step, { kind: K }>[] {
  return stage.steps.filter((s): s is Extract<Step, { kind: K }> => s.kind === kind);
}

function errorOf(text: string, opts?: Parameters<typeof parseDockerfile>[1]): DockerfileError {
  try {
    parseDockerfile(text, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(DockerfileError);
    return err as DockerfileError;
  }
  throw new Error("expected a DockerfileError");
}

const APP = `# syntax=docker/dockerfile:1
FROM python:3.12-slim
ARG APP_HOME=/srv/app
ARG PIP_VERSION=24.0
ARG DEBUG
ENV PYTHONUNBUFFERED=1 \\
    APP_HOME=\${APP_HOME} \\
    VENV=\${APP_HOME}/.venv
ENV PATH="\${VENV}/bin:\${PATH:-/usr/local/bin:/usr/bin:/bin}" MODE=\${DEBUG:+debug}
LABEL org.opencontainers.image.title="demo app" pip=\${PIP_VERSION}
WORKDIR $APP_HOME
WORKDIR src
COPY --chown=app:app --chmod=644 requirements.txt setup.cfg ./
RUN pip install --no-cache-dir "pip==$PIP_VERSION" && \\
    pip install -r requirements.txt
RUN ["python", "-m", "compileall", "."]
USER app
EXPOSE 8000 9000/udp
ENTRYPOINT ["python", "-m", "app"]
CMD ["--port", "8000"]
`;

describe("parseDockerfile: a realistic single-stage Dockerfile", () => {
  const plan = parseDockerfile(APP, { buildArgs: { PIP_VERSION: "23.3.1" } });
  const stage = plan.stages[0]!;

  it("has one stage from the python image, which is the target", () => {
    expect(plan.stages).toHaveLength(1);
    expect(plan.target).toBe(0);
    expect(stage).toMatchObject({ index: 0, name: null, from: "python:3.12-slim", fromStage: null, line: 2, needed: true });
    expect(plan.unusedBuildArgs).toEqual([]);
  });

  it("resolves ARGs from defaults and build args", () => {
    expect(stepsOf(stage, "ARG").map((s) => [s.name, s.default, s.value, s.line])).toEqual([
      ["APP_HOME", "/srv/app", "/srv/app", 3],
      ["PIP_VERSION", "24.0", "23.3.1", 4],
      ["DEBUG", null, null, 5],
    ]);
  });

  it("substitutes ENV values, including ${VAR:-default} and ${VAR:+alt}", () => {
    const [env1, env2] = stepsOf(stage, "ENV");
    expect(env1!.pairs).toEqual([
      ["PYTHONUNBUFFERED", "1"],
      ["APP_HOME", "/srv/app"],
      ["VENV", "/srv/app/.venv"],
    ]);
    expect(env1!.line).toBe(6);
    expect(env1!.text).toBe("ENV PYTHONUNBUFFERED=1     APP_HOME=${APP_HOME}     VENV=${APP_HOME}/.venv");
    expect(env2!.pairs).toEqual([
      ["PATH", "/srv/app/.venv/bin:/usr/local/bin:/usr/bin:/bin"],
      ["MODE", ""],
    ]);
  });

  it("substitutes LABEL, WORKDIR (relative to the previous one) and COPY", () => {
    expect(stepsOf(stage, "LABEL")[0]!.pairs).toEqual([
      ["org.opencontainers.image.title", "demo app"],
      ["pip", "23.3.1"],
    ]);
    expect(stepsOf(stage, "WORKDIR").map((s) => s.path)).toEqual(["/srv/app", "/srv/app/src"]);
    const [copy] = stepsOf(stage, "COPY");
    expect(copy).toEqual({
      kind: "COPY",
      sources: ["requirements.txt", "setup.cfg"],
      dest: "./",
      from: null,
      fromStage: null,
      chown: "app:app",
      chmod: "644",
      workdir: "/srv/app/src",
      line: 13,
      text: "COPY --chown=app:app --chmod=644 requirements.txt setup.cfg ./",
    });
  });

  it("leaves RUN commands to the shell and records env, workdir and user", () => {
    const [shell, exec] = stepsOf(stage, "RUN");
    expect(shell).toEqual({
      kind: "RUN",
      command: 'pip install --no-cache-dir "pip==$PIP_VERSION" &&     pip install -r requirements.txt',
      shell: ["/bin/sh", "-c"],
      env: {
        APP_HOME: "/srv/app",
        PIP_VERSION: "23.3.1",
        PYTHONUNBUFFERED: "1",
        VENV: "/srv/app/.venv",
        PATH: "/srv/app/.venv/bin:/usr/local/bin:/usr/bin:/bin",
        MODE: "",
      },
      workdir: "/srv/app/src",
      user: null,
      line: 14,
      text: 'RUN pip install --no-cache-dir "pip==$PIP_VERSION" &&     pip install -r requirements.txt',
    });
    expect("DEBUG" in shell!.env).toBe(false);
    expect(exec!.argv).toEqual(["python", "-m", "compileall", "."]);
    expect(exec!.command).toBe("python -m compileall .");
    expect(exec!.line).toBe(16);
  });

  it("records USER, EXPOSE, ENTRYPOINT and CMD", () => {
    expect(stepsOf(stage, "USER")[0]).toMatchObject({ user: "app", line: 17 });
    expect(stepsOf(stage, "EXPOSE")[0]!.ports).toEqual(["8000", "9000/udp"]);
    expect(stepsOf(stage, "ENTRYPOINT")[0]!.argv).toEqual(["python", "-m", "app"]);
    expect(stepsOf(stage, "CMD")[0]!.argv).toEqual(["--port", "8000"]);
    expect(stage.config).toEqual({
      env: {
        PYTHONUNBUFFERED: "1",
        APP_HOME: "/srv/app",
        VENV: "/srv/app/.venv",
        PATH: "/srv/app/.venv/bin:/usr/local/bin:/usr/bin:/bin",
        MODE: "",
      },
      workdir: "/srv/app/src",
      user: "app",
      shell: ["/bin/sh", "-c"],
      cmd: ["--port", "8000"],
      entrypoint: ["python", "-m", "app"],
      labels: { "org.opencontainers.image.title": "demo app", pip: "23.3.1" },
      exposedPorts: ["8000", "9000/udp"],
    });
  });

  it("keeps the steps in file order", () => {
    expect(stage.steps.map((s) => `${s.line}:${s.kind}`)).toEqual([
      "3:ARG",
      "4:ARG",
      "5:ARG",
      "6:ENV",
      "9:ENV",
      "10:LABEL",
      "11:WORKDIR",
      "12:WORKDIR",
      "13:COPY",
      "14:RUN",
      "16:RUN",
      "17:USER",
      "18:EXPOSE",
      "19:ENTRYPOINT",
      "20:CMD",
    ]);
  });

  it("reports build args no ARG declares", () => {
    expect(parseDockerfile(APP, { buildArgs: { NOPE: "1", DEBUG: "1" } }).unusedBuildArgs).toEqual(["NOPE"]);
  });

  it("uses a DEBUG build arg in ${DEBUG:+debug} and in RUN env", () => {
    const s = parseDockerfile(APP, { buildArgs: { DEBUG: "yes" } }).stages[0]!;
    expect(stepsOf(s, "ENV")[1]!.pairs[1]).toEqual(["MODE", "debug"]);
    expect(stepsOf(s, "RUN")[0]!.env.DEBUG).toBe("yes");
  });
});

describe("parseDockerfile: shell and exec forms", () => {
  it("turns shell-form CMD/ENTRYPOINT into the shell in effect", () => {
    const plan = parseDockerfile(`FROM alpine
CMD echo "hello $NAME"
ENTRYPOINT exec /app --flag
SHELL ["/bin/bash", "-eo", "pipefail", "-c"]
CMD echo bash
RUN echo one | cat
RUN ["/bin/echo", "two words"]
`);
    const s = plan.stages[0]!;
    const cmds = s.steps.filter((x): x is CommandStep => x.kind === "CMD" || x.kind === "ENTRYPOINT");
    expect(cmds.map((c) => [c.kind, c.argv])).toEqual([
      ["CMD", ["/bin/sh", "-c", 'echo "hello $NAME"']],
      ["ENTRYPOINT", ["/bin/sh", "-c", "exec /app --flag"]],
      ["CMD", ["/bin/bash", "-eo", "pipefail", "-c", "echo bash"]],
    ]);
    const runs = stepsOf(s, "RUN");
    expect(runs[0]).toMatchObject({ command: "echo one | cat", shell: ["/bin/bash", "-eo", "pipefail", "-c"] });
    expect(runs[0]!.argv).toBeUndefined();
    expect(runs[1]!.argv).toEqual(["/bin/echo", "two words"]);
    expect(stepsOf(s, "SHELL")[0]!.argv).toEqual(["/bin/bash", "-eo", "pipefail", "-c"]);
  });

  it("treats text that only looks like JSON as shell form, like Docker", () => {
    const run = stepsOf(parseDockerfile('FROM alpine\nRUN [ -f /etc/os-release ] && echo ok\nCMD ["a", 1]\n').stages[0]!, "RUN")[0]!;
    expect(run.command).toBe("[ -f /etc/os-release ] && echo ok");
    expect(run.argv).toBeUndefined();
    const cmd = stepsOf(parseDockerfile('FROM alpine\nCMD ["a", 1]\n').stages[0]!, "CMD")[0]!;
    expect(cmd.argv).toEqual(["/bin/sh", "-c", '["a", 1]']);
  });

  it("resets an inherited CMD when ENTRYPOINT is set, but keeps one set in the stage", () => {
    const plan = parseDockerfile(`FROM alpine AS a
CMD ["sh"]
FROM a AS b
ENTRYPOINT ["/init"]
FROM a
CMD ["x"]
ENTRYPOINT ["/init"]
`);
    expect(plan.stages[1]!.config).toMatchObject({ cmd: null, entrypoint: ["/init"] });
    expect(plan.stages[2]!.config).toMatchObject({ cmd: ["x"], entrypoint: ["/init"] });
  });

  it("does not take << inside an exec-form JSON string for a heredoc", () => {
    const s = parseDockerfile('FROM alpine\nRUN ["sh", "-c", "cat <<EOF"]\nRUN echo after\nUSER nobody\n').stages[0]!;
    expect(s.steps.map((x) => `${x.line}:${x.kind}`)).toEqual(["2:RUN", "3:RUN", "4:USER"]);
    expect(stepsOf(s, "RUN")[0]!.argv).toEqual(["sh", "-c", "cat <<EOF"]);
  });

  it("accepts MAINTAINER as a maintainer LABEL", () => {
    const s = parseDockerfile("FROM alpine\nMAINTAINER Jane Doe <jane@example.com>\n").stages[0]!;
    expect(s.steps).toEqual([
      { kind: "LABEL", pairs: [["maintainer", "Jane Doe <jane@example.com>"]], line: 2, text: "MAINTAINER Jane Doe <jane@example.com>" },
    ]);
  });
});

describe("parseDockerfile: variables", () => {
  it("applies ARGs before the first FROM to FROM lines only", () => {
    const text = `ARG REGISTRY=docker.io/library
ARG PY_VERSION=3.12
ARG VARIANT=slim
FROM \${REGISTRY}/python:\${PY_VERSION}-\${VARIANT}
RUN echo "$PY_VERSION"
ARG PY_VERSION
ARG VARIANT=bookworm
RUN echo "$PY_VERSION"
`;
    const plan = parseDockerfile(text, { buildArgs: { PY_VERSION: "3.11" } });
    const s = plan.stages[0]!;
    expect(s.from).toBe("docker.io/library/python:3.11-slim");
    const [before, after] = stepsOf(s, "RUN");
    expect(before!.env).toEqual({});
    expect(after!.env).toEqual({ PY_VERSION: "3.11", VARIANT: "bookworm" });
    expect(stepsOf(s, "ARG").map((a) => [a.name, a.default, a.value])).toEqual([
      ["PY_VERSION", null, "3.11"],
      ["VARIANT", "bookworm", "bookworm"],
    ]);
    // Without the build arg, a re-declared global ARG takes the global default.
    expect(stepsOf(parseDockerfile(text).stages[0]!, "RUN")[1]!.env.PY_VERSION).toBe("3.12");
    expect(parseDockerfile(text).stages[0]!.from).toBe("docker.io/library/python:3.12-slim");
  });

  it("expands ARG defaults from earlier ARGs and ENV, and lets ENV win over an ARG of the same name", () => {
    const s = parseDockerfile(`FROM alpine
ARG A=1
ARG B=\${A}2 C=$B-3
ENV A=env
ARG A=ignored
RUN true
`).stages[0]!;
    expect(stepsOf(s, "ARG").map((a) => [a.name, a.value])).toEqual([
      ["A", "1"],
      ["B", "12"],
      ["C", "12-3"],
      ["A", "ignored"],
    ]);
    expect(stepsOf(s, "RUN")[0]!.env).toEqual({ A: "env", B: "12", C: "12-3" });
  });

  it("substitutes ENV against the environment before the instruction, like Docker", () => {
    const s = parseDockerfile("FROM alpine\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n").stages[0]!;
    expect(stepsOf(s, "ENV").map((e) => e.pairs)).toEqual([
      [["abc", "hello"]],
      [
        ["abc", "bye"],
        ["def", "hello"],
      ],
      [["ghi", "bye"]],
    ]);
  });

  it("handles quotes, escapes, unset variables and the legacy ENV form", () => {
    const s = parseDockerfile(`FROM alpine
ENV X=x
ENV A='$X' B="$X y" C=\\$X D=a\\ b E=$UNSET F=\${UNSET:-dflt} G=\${X:+alt} H=\${X:-dflt} I=$ J=\${X}-\${X}
ENV LEGACY value with   spaces $X
`).stages[0]!;
    expect(stepsOf(s, "ENV")[1]!.pairs).toEqual([
      ["A", "$X"],
      ["B", "x y"],
      ["C", "$X"],
      ["D", "a b"],
      ["E", ""],
      ["F", "dflt"],
      ["G", "alt"],
      ["H", "x"],
      ["I", "$"],
      ["J", "x-x"],
    ]);
    expect(stepsOf(s, "ENV")[2]!.pairs).toEqual([["LEGACY", "value with   spaces x"]]);
  });

  it("substitutes USER, EXPOSE, COPY --chown/--from and WORKDIR", () => {
    const plan = parseDockerfile(`FROM alpine AS tools
FROM alpine
ARG UID=1000 PORT=8080 SRC=tools DIR=app
USER \${UID}:\${UID}
EXPOSE $PORT
COPY --from=$SRC --chown=$UID /bin/x /\${DIR}/bin/
WORKDIR /$DIR/../$DIR/data
`);
    const s = plan.stages[1]!;
    expect(stepsOf(s, "USER")[0]!.user).toBe("1000:1000");
    expect(stepsOf(s, "EXPOSE")[0]!.ports).toEqual(["8080"]);
    expect(stepsOf(s, "COPY")[0]).toMatchObject({ from: "tools", fromStage: 0, chown: "1000", sources: ["/bin/x"], dest: "/app/bin/" });
    expect(stepsOf(s, "WORKDIR")[0]!.path).toBe("/app/data");
    expect(plan.stages[0]!.needed).toBe(true);
  });

  it("uses the base image config when the executor provides it", () => {
    const plan = parseDockerfile(
      `FROM python:3.12
ENV PATH=/opt/venv/bin:$PATH
WORKDIR sub
RUN pip --version
FROM scratch
WORKDIR rel
`,
      {
        imageConfig: (image) =>
          image === "python:3.12" ? { env: { PATH: "/usr/local/bin:/usr/bin", LANG: "C.UTF-8" }, workdir: "/home", user: "py" } : undefined,
      },
    );
    const run = stepsOf(plan.stages[0]!, "RUN")[0]!;
    expect(run.env).toEqual({ PATH: "/opt/venv/bin:/usr/local/bin:/usr/bin", LANG: "C.UTF-8" });
    expect(run.workdir).toBe("/home/sub");
    expect(run.user).toBe("py");
    expect(stepsOf(plan.stages[1]!, "WORKDIR")[0]!.path).toBe("/rel");
  });

  it("rejects bad substitutions with the line", () => {
    expect(errorOf('FROM alpine\n\nENV A="${B:?must be set}"\n').message).toBe("line 3: ENV: B: must be set");
    expect(errorOf("FROM alpine\nENV A=${B:?}\n").message).toBe("line 2: ENV: B: is not allowed to be unset");
    expect(errorOf("FROM alpine\nWORKDIR ${X%/*}\n").message).toMatch(/^line 2: WORKDIR: unsupported modifier \(%\)/);
    expect(errorOf("FROM alpine\nENV A=${B\n").message).toMatch(/^line 2: ENV: /);
    expect(errorOf('FROM alpine\nLABEL a="unterminated\n').message).toMatch(/^line 2: LABEL: unexpected end of statement/);
    expect(errorOf("FROM $IMAGE\n").message).toBe("line 1: FROM: base name ($IMAGE) should not be blank");
  });
});

describe("parseDockerfile: multi-stage builds", () => {
  const MULTI = `ARG BASE=alpine:3.20
ARG GO=1.22

FROM golang:\${GO} AS build
WORKDIR /src
ENV CGO_ENABLED=0
COPY . .
RUN go build -o /out/app ./cmd/app

FROM node:20 AS Assets
WORKDIR /web
RUN npm ci && npm run build

FROM \${BASE} AS docs
COPY --from=assets /web/docs /docs

FROM build AS test
RUN go test ./...

FROM $BASE
COPY --from=build /out/app /usr/local/bin/app
COPY --from=1 /web/dist /srv/static
COPY --from=busybox:1.36 /bin/busybox /bin/busybox
CMD ["app"]
`;

  it("resolves stages, names, FROM references and COPY --from by name, index and image", () => {
    const plan = parseDockerfile(MULTI, { buildArgs: { BASE: "debian:12" } });
    expect(plan.stages.map((s) => [s.index, s.name, s.from, s.fromStage, s.line])).toEqual([
      [0, "build", "golang:1.22", null, 4],
      [1, "assets", "node:20", null, 10],
      [2, "docs", "debian:12", null, 14],
      [3, "test", "build", 0, 17],
      [4, null, "debian:12", null, 20],
    ]);
    expect(stepsOf(plan.stages[4]!, "COPY").map((c) => [c.from, c.fromStage])).toEqual([
      ["build", 0],
      ["1", 1],
      ["busybox:1.36", null],
    ]);
    expect(stepsOf(plan.stages[2]!, "COPY")[0]).toMatchObject({ from: "assets", fromStage: 1 });
  });

  it("inherits ENV and WORKDIR from the stage it is built FROM, but not ARGs", () => {
    const plan = parseDockerfile(MULTI);
    const run = stepsOf(plan.stages[3]!, "RUN")[0]!;
    expect(run.workdir).toBe("/src");
    expect(run.env).toEqual({ CGO_ENABLED: "0" });
  });

  it("targets the last stage by default and marks the stages it needs", () => {
    const plan = parseDockerfile(MULTI);
    expect(plan.target).toBe(4);
    expect(plan.stages.map((s) => s.needed)).toEqual([true, true, false, false, true]);
  });

  it("selects a target by name and follows FROM and COPY --from transitively", () => {
    const test = parseDockerfile(MULTI, { target: "test" });
    expect(test.target).toBe(3);
    expect(test.stages.map((s) => s.needed)).toEqual([true, false, false, true, false]);
    const docs = parseDockerfile(MULTI, { target: "DOCS" });
    expect(docs.target).toBe(2);
    expect(docs.stages.map((s) => s.needed)).toEqual([false, true, true, false, false]);
  });

  it("rejects an unknown target", () => {
    const err = errorOf(MULTI, { target: "nope" });
    expect(err.line).toBe(0);
    expect(err.message).toBe('target stage "nope" not found; named stages: build, assets, docs, test');
  });

  it("rejects COPY --from of the current or a later stage", () => {
    expect(errorOf("FROM alpine AS a\nCOPY --from=0 /x /y\n").message).toMatch(/^line 2: COPY --from=0: refers to the current or a later stage/);
    expect(errorOf("FROM alpine AS a\nCOPY --from=b /x /y\nFROM alpine AS b\n").message).toMatch(
      /^line 2: COPY --from=b: refers to the current or a later stage/,
    );
  });

  it("rejects duplicate and invalid stage names and malformed FROM lines", () => {
    expect(errorOf("FROM alpine AS a\nFROM alpine AS A\n").message).toBe('line 2: FROM: duplicate stage name "a"');
    expect(errorOf("FROM alpine AS 1st\n").message).toMatch(/^line 1: FROM: invalid stage name "1st"/);
    expect(errorOf("FROM alpine AS\n").message).toBe("line 1: FROM requires either one or three arguments: FROM <image> [AS <name>]");
    expect(errorOf("FROM\n").message).toBe("line 1: FROM requires either one or three arguments: FROM <image> [AS <name>]");
  });

  it("records FROM --platform after substitution", () => {
    const plan = parseDockerfile("ARG P=linux/amd64\nFROM --platform=$P alpine\n");
    expect(plan.stages[0]!.platform).toBe("linux/amd64");
  });
});

describe("parseDockerfile: lines, continuations and comments", () => {
  it("joins continuation lines, drops comments inside them and reports 1-based start lines", () => {
    const text = [
      "# a comment before anything",
      "",
      "FROM debian:12",
      "",
      "# install things",
      "RUN apt-get update \\",
      "    # a comment inside the continuation",
      "",
      "    && apt-get install -y \\",
      "        curl \\",
      "        git",
      "   # indented comment",
      "  ENV A=1 \\",
      "      B=2",
      "COPY a \\",
      "     /b",
    ].join("\n");
    const s = parseDockerfile(text).stages[0]!;
    expect(s.line).toBe(3);
    expect(s.steps.map((x) => [x.kind, x.line, x.text])).toEqual([
      ["RUN", 6, "RUN apt-get update     && apt-get install -y         curl         git"],
      ["ENV", 13, "ENV A=1       B=2"],
      ["COPY", 15, "COPY a      /b"],
    ]);
    expect((s.steps[0] as RunStep).command).toBe("apt-get update     && apt-get install -y         curl         git");
    expect(stepsOf(s, "ENV")[0]!.pairs).toEqual([
      ["A", "1"],
      ["B", "2"],
    ]);
  });

  it("handles CRLF line endings, lower-case keywords and the escape directive", () => {
    const crlf = parseDockerfile("from alpine as base\r\nrun echo a \\\r\n  b\r\ncopy x /y\r\n");
    expect(crlf.stages[0]!.name).toBe("base");
    expect(crlf.stages[0]!.steps.map((x) => [x.kind, x.line, x.text])).toEqual([
      ["RUN", 2, "run echo a   b"],
      ["COPY", 4, "copy x /y"],
    ]);
    const windows = parseDockerfile("# escape=`\nFROM mcr.microsoft.com/windows/servercore\nENV DIR=C:\\app `\n    X=1\nRUN dir `\n  C:\\app\n");
    const s = windows.stages[0]!;
    expect(stepsOf(s, "ENV")[0]!.pairs).toEqual([
      ["DIR", "C:\\app"],
      ["X", "1"],
    ]);
    expect(stepsOf(s, "RUN")[0]).toMatchObject({ command: "dir   C:\\app", line: 5 });
  });
});

describe("parseDockerfile: errors", () => {
  const unsupported: [string, string, string][] = [
    ["HEALTHCHECK", "HEALTHCHECK CMD curl -f http://localhost/ || exit 1", "HEALTHCHECK is not supported by sandbar builds"],
    ["ONBUILD", "ONBUILD RUN make", "ONBUILD is not supported by sandbar builds"],
    ["STOPSIGNAL", "STOPSIGNAL SIGTERM", "STOPSIGNAL is not supported by sandbar builds"],
    ["VOLUME", "VOLUME /data", "VOLUME is not supported by sandbar builds"],
    ["RUN heredoc", "RUN <<EOF\necho hi\nEOF", "RUN with a heredoc (<<) is not supported by sandbar builds"],
    ["RUN heredoc later in the line", "RUN python3 - <<'PY'\nprint(1)\nPY", "RUN with a heredoc (<<) is not supported by sandbar builds"],
    ["COPY heredoc", "COPY <<EOF /etc/motd\nhello\nEOF", "COPY with a heredoc (<<) is not supported by sandbar builds"],
    ["RUN --mount", "RUN --mount=type=cache,target=/root/.cache pip install x", "RUN --mount is not supported by sandbar builds"],
    ["RUN --network", "RUN --network=none make", "RUN --network is not supported by sandbar builds"],
    ["RUN --security", "RUN --security=insecure make", "RUN --security is not supported by sandbar builds"],
    ["COPY --link", "COPY --link . /app", "COPY --link is not supported by sandbar builds"],
    ["COPY --parents", "COPY --parents ./a/b /app/", "COPY --parents is not supported by sandbar builds"],
    ["COPY --exclude", "COPY --exclude=*.pyc . /app", "COPY --exclude is not supported by sandbar builds"],
    ["ADD URL", "ADD https://example.com/tool.bin /usr/local/bin/tool", "ADD from a URL (https://example.com/tool.bin) is not supported by sandbar builds"],
    ["ADD git", "ADD git@github.com:org/repo.git /src", "ADD from a URL (git@github.com:org/repo.git) is not supported by sandbar builds"],
    ["ADD archive", "ADD vendor.tar.gz /opt/", "ADD of an archive (vendor.tar.gz), which Docker would auto-extract, is not supported by sandbar builds"],
  ];

  it.each(unsupported)("rejects %s with the instruction and line", (_name, instruction, message) => {
    const text = `# comment\nFROM alpine\n\nWORKDIR /app\nENV A=1\n\n${instruction}\nRUN echo after\n`;
    const err = errorOf(text);
    expect(err.line).toBe(7);
    expect(err.message.startsWith(`line 7: ${message}`)).toBe(true);
  });

  it("gives the exact message for HEALTHCHECK", () => {
    expect(errorOf("FROM alpine\nRUN true\nRUN true\nRUN true\nRUN true\nRUN true\nHEALTHCHECK NONE\n").message).toBe(
      "line 7: HEALTHCHECK is not supported by sandbar builds",
    );
  });

  it("accepts ADD of plain local files", () => {
    const s = parseDockerfile("FROM alpine\nADD --chown=1:2 app.py config/ /srv/\n").stages[0]!;
    expect(s.steps[0]).toMatchObject({ kind: "ADD", sources: ["app.py", "config/"], dest: "/srv/", from: null, fromStage: null, chown: "1:2", chmod: null });
  });

  it("rejects an empty Dockerfile and one without FROM", () => {
    expect(errorOf("").message).toMatch(/Dockerfile is empty/);
    expect(errorOf("# only a comment\n\n").message).toMatch(/Dockerfile is empty/);
    expect(errorOf("ARG A=1\nARG B\n").message).toMatch(/no FROM instruction/);
    expect(errorOf("ARG A=1\nRUN echo hi\nFROM alpine\n").message).toBe("line 2: RUN before the first FROM: only ARG may come before FROM");
  });

  it("rejects syntax problems with the line", () => {
    const cases: [string, string][] = [
      ["FROM alpine\nFOO bar\n", "line 2: unknown instruction: FOO"],
      ["FROM alpine\nRUN\n", "line 2: RUN requires at least one argument"],
      ["FROM alpine\nCOPY onlyone\n", "line 2: COPY requires at least two arguments: COPY <src>... <dest>"],
      ["FROM alpine\nCOPY a b /dir\n", 'line 2: COPY with more than one source needs a destination directory ending in "/"'],
      ["FROM alpine\nCOPY --form=x a /b\n", "line 2: COPY: unknown flag --form"],
      ["FROM alpine\nCOPY --chown a /b\n", "line 2: COPY: flag --chown needs a value (--chown=...)"],
      ["FROM alpine\nENV A=1 B\n", 'line 2: ENV: can\'t find = in "B"; the form is name=value'],
      ["FROM alpine\nENV ONLYNAME\n", "line 2: ENV must have two arguments (ENV name=value)"],
      ["FROM alpine\nSHELL /bin/bash -c\n", 'line 2: SHELL requires a non-empty JSON array, e.g. SHELL ["/bin/bash", "-c"]'],
      ["FROM alpine\nEXPOSE http\n", 'line 2: EXPOSE: invalid port "http" (expected e.g. 8000, 8000/tcp, 53/udp)'],
      ["FROM alpine\nWORKDIR\n", "line 2: WORKDIR requires exactly one argument"],
      ["FROM alpine\nUSER\n", "line 2: USER requires exactly one argument"],
      ["FROM alpine\nUSER $NOBODY\n", "line 2: USER: $NOBODY is empty after variable substitution"],
      ["FROM alpine\nCOPY http://example.com/x /x\n", "line 2: COPY: source can't be a URL (http://example.com/x)"],
    ];
    for (const [text, message] of cases) expect(errorOf(text).message).toBe(message);
  });

  it("exposes the line and instruction on the error", () => {
    const err = errorOf("FROM alpine\n\nVOLUME /data\n");
    expect(err).toMatchObject({ name: "DockerfileError", line: 3, instruction: "VOLUME", detail: "VOLUME is not supported by sandbar builds" });
  });
});

describe("stepCacheKey", () => {
  const run = (text: string, buildArgs?: Record<string, string>): BuildPlan => parseDockerfile(text, { buildArgs });
  const firstRun = (plan: BuildPlan): RunStep => stepsOf(plan.stages[0]!, "RUN")[0]!;
  const base = "FROM alpine\nARG V=1\nRUN echo $V\n";

  it("is a sha256 hex digest and stable for the same step", () => {
    const key = stepCacheKey("parent", firstRun(run(base)));
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(stepCacheKey("parent", firstRun(run(base)))).toBe(key);
  });

  it("ignores the line number and text, and the order of env keys", () => {
    const key = stepCacheKey("parent", firstRun(run(base)));
    expect(stepCacheKey("parent", firstRun(run(`# moved down\n\n${base}`)))).toBe(key);
    const step = firstRun(run(base));
    expect(stepCacheKey("parent", { ...step, line: 99, text: "RUN   echo $V" })).toBe(key);
    const a = { ...step, env: { A: "1", B: "2" } };
    const b = { ...step, env: { B: "2", A: "1" } };
    expect(stepCacheKey("p", a)).toBe(stepCacheKey("p", b));
  });

  it("changes with the command, env, workdir, user, parent and extra", () => {
    const step = firstRun(run(base));
    const key = stepCacheKey("parent", step);
    const others = [
      stepCacheKey("parent", firstRun(run("FROM alpine\nARG V=1\nRUN echo $V!\n"))),
      stepCacheKey("parent", firstRun(run(base, { V: "2" }))),
      stepCacheKey("parent", { ...step, workdir: "/tmp" }),
      stepCacheKey("parent", { ...step, user: "nobody" }),
      stepCacheKey("other-parent", step),
      stepCacheKey("parent", step, "sha256:abc"),
      stepCacheKey("parent", step, ""),
    ];
    for (const k of others) expect(k).not.toBe(key);
    expect(new Set(others).size).toBe(others.length);
  });

  it("uses extra for COPY content and the step's own fields", () => {
    const copy = stepsOf(parseDockerfile("FROM alpine\nCOPY --chown=1 a /b\n").stages[0]!, "COPY")[0]! as CopyStep;
    const k1 = stepCacheKey("p", copy, "hash1");
    expect(stepCacheKey("p", copy, "hash1")).toBe(k1);
    expect(stepCacheKey("p", copy, "hash2")).not.toBe(k1);
    expect(stepCacheKey("p", { ...copy, chown: "2" }, "hash1")).not.toBe(k1);
    expect(stepCacheKey("p", { ...copy, line: 40 }, "hash1")).toBe(k1);
  });
});
