// SPDX-License-Identifier: GPL-3.0-or-later
//
// Flamenco job type "scene-diffusion": a Scene Diffusion batch as Flamenco tasks.
//
//   prepare (one per .blend, Blender's CPU work)
//     -> batch (once, the GPU work on Ray: python -m backend batch)
//       -> apply (one per .blend, results back into the files)
//
// Install: copy this file into the `scripts/` folder beside the flamenco-manager
// executable (see farm/README.md). Every command is an `exec` with an argument array,
// so no shell ever re-splits a path or a prompt that holds spaces.

const SCRIPTS = ["texture_batch.py", "batch_render.py"];

const JOB_TYPE = {
    label: "Scene Diffusion Batch",
    description: "Prepare job folders in Blender, run them on a Ray cluster, apply the results",
    settings: [
        { key: "blendfiles", type: "string", label: "Blend Files",
          description: "The .blend files of the batch, one per line or separated by ';'. Empty: the file " +
                       "submitted from Blender" },
        // Filled by the Flamenco add-on with the submitted (packed) file.
        { key: "blendfile", type: "string", visible: "web",
          description: "The .blend file submitted from Blender (used when Blend Files is empty)" },
        { key: "script", type: "string", required: true, choices: SCRIPTS, default: "texture_batch.py",
          description: "The examples/ script of the checkout that prepares and applies the jobs" },
        { key: "script_args", type: "string", default: "", label: "Script Arguments",
          description: "Arguments of the script, quoted like a shell: --prompt \"mossy stone wall\" " +
                       "--objects Wall. A JSON array of strings also works" },
        { key: "jobs_dir", type: "string", subtype: "dir_path", required: true, label: "Jobs Folder",
          description: "Folder the job folders are written to; every worker must see it" },
        { key: "save_dir", type: "string", subtype: "dir_path", default: "", label: "Save To",
          description: "texture_batch.py only: folder the textured .blend files are saved to (same " +
                       "names). Empty: each file is saved over itself" },
        { key: "ray_address", type: "string", default: "auto", label: "Ray Address",
          description: "Ray cluster the batch joins ('auto': the one running on the worker's machine)" },
        { key: "local_workers", type: "int32", default: 0, propargs: { min: 0 }, label: "Local Workers",
          description: "Above 0: start a local Ray cluster with this many workers instead of joining one" },
        { key: "batch_args", type: "string", default: "", label: "Batch Arguments",
          description: "More arguments of the batch command, e.g. --device cuda --registry /models" },
        { key: "blender", type: "string", required: true, default: "{blender}", visible: "submission",
          description: "Blender executable on the workers" },
        { key: "python", type: "string", required: true, default: "python3", label: "Backend Python",
          visible: "submission",
          description: "Python executable that has the backend's requirements (and Ray) installed" },
        { key: "checkout", type: "string", subtype: "dir_path", required: true, label: "Checkout Folder",
          visible: "submission",
          description: "The Scene Diffusion checkout on the workers (holds backend/ and examples/)" },
    ],
};

// `python -c` stand-in for `python -m backend` run from the checkout: the exec command has
// no working-directory parameter, so the checkout (first argument) goes on sys.path instead.
// No braces in it: the Manager expands {variables} in every argument.
const BACKEND_LAUNCHER = "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); " +
                         "runpy.run_module('backend', run_name='__main__', alter_sys=True)";

function compileJob(job) {
    const plan = readSettings(job.settings);
    const script = joinPath(plan.checkout, "examples/" + plan.script);

    const prepares = plan.files.map((file, index) => {
        const task = author.Task(taskName("prepare", index, file), "blender");
        task.addCommand(author.Command("exec", {
            exe: plan.blender,
            args: ["-b", file, "-P", script, "--", "--prepare", plan.jobsDir].concat(plan.scriptArgs),
        }));
        return task;
    });

    const batch = author.Task("batch", "misc");
    const where = plan.localWorkers > 0 ? ["--local", String(plan.localWorkers)] : ["--ray", plan.rayAddress];
    batch.addCommand(author.Command("exec", {
        exe: plan.python,
        // --no-progress: a farm log is no terminal; the summary line and batch.json remain.
        args: ["-c", BACKEND_LAUNCHER, plan.checkout, "batch", "--jobs", plan.jobsDir]
            .concat(where, ["--no-progress"], plan.batchArgs),
    }));
    prepares.forEach((task) => batch.addDependency(task));

    const applies = plan.files.map((file, index) => {
        const task = author.Task(taskName("apply", index, file), "blender");
        let args = ["-b", file, "-P", script, "--", "--apply", plan.jobsDir].concat(plan.scriptArgs);
        if (plan.script === "texture_batch.py") {
            args = args.concat(["--save", plan.saveDir ? joinPath(plan.saveDir, baseName(file)) : file]);
        }
        task.addCommand(author.Command("exec", { exe: plan.blender, args: args }));
        task.addDependency(batch);
        return task;
    });

    prepares.concat([batch], applies).forEach((task) => job.addTask(task));
}

// Checked settings with defaults filled in; throws a message naming the bad setting.
function readSettings(settings) {
    const value = (key) => {
        const given = settings[key];
        if (given !== undefined && given !== null) return given;
        const known = JOB_TYPE.settings.find((s) => s.key === key);
        return known && known.default !== undefined ? known.default : "";
    };
    const text = (key) => String(value(key)).trim();
    const required = (key) => {
        const got = text(key);
        if (!got) fail(`setting '${key}' is empty`);
        return got;
    };

    let files = splitFileList(text("blendfiles"));
    if (files.length === 0 && text("blendfile")) files = [text("blendfile")];
    if (files.length === 0) {
        fail("no .blend files: set 'blendfiles' (one path per line or ';'-separated) or submit from Blender");
    }
    const notBlend = files.filter((f) => !/\.blend$/i.test(f));
    if (notBlend.length) fail(`not .blend files: ${notBlend.join(", ")}`);

    const script = text("script");
    if (SCRIPTS.indexOf(script) < 0) fail(`setting 'script' is '${script}', expected one of ${SCRIPTS.join(", ")}`);

    const scriptArgs = splitArgs(String(value("script_args")), "script_args");
    const stageFlag = scriptArgs.find((a) => a === "--prepare" || a === "--apply");
    if (stageFlag) fail(`'script_args' must not hold ${stageFlag}: the job adds each stage itself`);
    if (script === "texture_batch.py" && scriptArgs.indexOf("--save") >= 0) {
        fail("'script_args' must not hold --save: use 'save_dir'");
    }

    const localWorkers = Number(value("local_workers"));
    if (!Number.isInteger(localWorkers) || localWorkers < 0) {
        fail(`setting 'local_workers' is ${value("local_workers")}, expected a whole number from 0`);
    }
    const rayAddress = text("ray_address");
    if (localWorkers === 0 && !rayAddress) fail("set 'ray_address' (e.g. auto) or 'local_workers' above 0");

    return {
        files: files,
        script: script,
        scriptArgs: scriptArgs,
        jobsDir: required("jobs_dir"),
        saveDir: text("save_dir"),
        rayAddress: rayAddress,
        localWorkers: localWorkers,
        batchArgs: splitArgs(String(value("batch_args")), "batch_args"),
        blender: required("blender"),
        python: required("python"),
        checkout: required("checkout"),
    };
}

function fail(message) {
    throw new Error(`Scene Diffusion: ${message}`);
}

function splitFileList(textValue) {
    return textValue.split(/[\n;]/).map((f) => f.trim()).filter((f) => f.length > 0);
}

// Shell-like splitting: whitespace separates; '...' is literal; "..." keeps spaces, \" and \\ escaped
// inside it. Outside quotes a backslash escapes only a quote, a backslash or whitespace, so Windows
// paths (C:\scenes\a.blend) pass unquoted. A JSON array of strings is taken as it is.
function splitArgs(textValue, key) {
    const trimmed = textValue.trim();
    if (trimmed.startsWith("[")) return parseJsonArgs(trimmed, key);
    const args = [];
    let current = null; // null: between arguments
    let quote = "";
    for (let i = 0; i < textValue.length; i++) {
        const ch = textValue[i];
        const next = i + 1 < textValue.length ? textValue[i + 1] : "";
        if (quote === "'") {
            if (ch === "'") quote = "";
            else current += ch;
        } else if (quote === '"') {
            if (ch === "\\" && (next === '"' || next === "\\")) current += textValue[++i];
            else if (ch === '"') quote = "";
            else current += ch;
        } else if (ch === "\\" && /["'\\\s]/.test(next)) {
            current = (current || "") + textValue[++i];
        } else if (ch === "'" || ch === '"') {
            quote = ch;
            current = current || "";
        } else if (/\s/.test(ch)) {
            if (current !== null) args.push(current);
            current = null;
        } else {
            current = (current || "") + ch;
        }
    }
    if (quote) fail(`setting '${key}' has an unclosed ${quote} quote`);
    if (current !== null) args.push(current);
    return args;
}

function parseJsonArgs(textValue, key) {
    let parsed;
    try {
        parsed = JSON.parse(textValue);
    } catch (err) {
        fail(`setting '${key}' is not a valid JSON array: ${err.message}`);
    }
    if (!Array.isArray(parsed) || parsed.some((a) => typeof a !== "string")) {
        fail(`setting '${key}' must be a JSON array of strings`);
    }
    return parsed;
}

// dir + "/" + name without doubling separators; forward slashes work on Windows workers too.
function joinPath(dir, name) {
    return dir.replace(/[\\/]+$/, "") + "/" + name;
}

function baseName(file) {
    const parts = file.split(/[\\/]/);
    return parts[parts.length - 1];
}

function taskName(stage, index, file) {
    return `${stage}-${index + 1}-${baseName(file)}`;
}
