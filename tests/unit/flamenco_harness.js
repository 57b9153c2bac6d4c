// Runs a Flamenco job compiler script outside Flamenco, for tests/unit/test_farm_adapters.py.
//
//   node flamenco_harness.js SCRIPT.js < request.json
//
// request.json: {"settings": {...}, "name": "job name"}. The script is loaded in a fresh `vm`
// context with stand-ins for what Flamenco Manager gives a script (author.Task, author.Command,
// print, a job object with settings and addTask); compileJob(job) is called and the result is
// printed as one JSON object: {"job_type": JOB_TYPE, "tasks": [...]} or {"job_type", "error"}.
// Each task: {name, type, commands: [{name, parameters}], dependencies: [task names]}.

"use strict";

const fs = require("fs");
const vm = require("vm");

function makeAuthor() {
    const created = new Set();
    return {
        created: created,
        Task(name, type) {
            if (!String(name || "").trim()) throw new Error("author.Task(name, type): name is required");
            if (!String(type || "").trim()) throw new Error("author.Task(name, type): type is required");
            const task = {
                name: name,
                type: type,
                commands: [],
                dependencies: [],
                addCommand(command) {
                    this.commands.push(command);
                },
                addDependency(other) {
                    if (!created.has(other)) throw new Error("addDependency: not a task from author.Task");
                    this.dependencies.push(other);
                },
            };
            created.add(task);
            return task;
        },
        Command(name, parameters) {
            return { name: name, parameters: parameters };
        },
    };
}

function main() {
    const scriptPath = process.argv[2];
    const request = JSON.parse(fs.readFileSync(0, "utf8"));
    const author = makeAuthor();
    const added = [];
    const job = {
        name: request.name || "test job",
        settings: Object.assign({}, request.settings || {}),
        metadata: {},
        addTask(task) {
            if (!author.created.has(task)) throw new Error("job.addTask: not a task from author.Task");
            added.push(task);
        },
    };
    const logs = [];
    const context = vm.createContext({
        author: { Task: author.Task, Command: author.Command },
        print: (...parts) => logs.push(parts.map(String).join(" ")),
    });
    vm.runInContext(fs.readFileSync(scriptPath, "utf8"), context, { filename: scriptPath });
    // Top-level const/let live in the context's global lexical scope, reachable by evaluation.
    const jobType = vm.runInContext("typeof JOB_TYPE === 'undefined' ? null : JOB_TYPE", context);
    const compileJob = vm.runInContext("typeof compileJob === 'function' ? compileJob : null", context);
    const out = { job_type: JSON.parse(JSON.stringify(jobType)), logs: logs };
    if (!compileJob) {
        out.error = "the script defines no compileJob(job) function";
    } else {
        try {
            compileJob(job);
            out.tasks = added.map((task) => ({
                name: task.name,
                type: task.type,
                commands: JSON.parse(JSON.stringify(task.commands)),
                dependencies: task.dependencies.map((dep) => dep.name),
            }));
            // A dependency on a task never added to the job would dangle in Flamenco.
            const addedSet = new Set(added);
            added.forEach((task) => task.dependencies.forEach((dep) => {
                if (!addedSet.has(dep)) throw new Error(`task ${task.name} depends on ${dep.name}, not in the job`);
            }));
        } catch (err) {
            delete out.tasks;
            out.error = err && err.message !== undefined ? err.message : String(err);
        }
    }
    process.stdout.write(JSON.stringify(out) + "\n");
}

main();
