// QBM dashboard: an Alpine.js component that is a client of the REST API under /api/v1.
// Every number on the page comes from an API call carrying the API key the person entered (kept in
// sessionStorage, for this tab only); the page holds nothing the API would not give that key.
"use strict";

const API = "/api/v1";
const KEY_STORE = "qbm.apiKey";
const POLL_MS = 1000;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// "field: text; other.field: text" (the API's 422 sentences) -> {field: text, ...}, for the fields a form has;
// a "; " not followed by one of those fields' names is part of the sentence. The rest goes under _form.
function fieldErrors(message, fields) {
  const named = (part) => {
    const m = /^([A-Za-z_][\w.]*): /.exec(part);
    return m && fields.some((f) => m[1] === f || m[1].startsWith(f + ".")) ? m[1] : null;
  };
  const parts = [];
  for (const piece of String(message).split("; ")) {
    if (parts.length && !named(piece)) parts[parts.length - 1] += "; " + piece;
    else parts.push(piece);
  }
  const out = {};
  for (const part of parts) {
    const name = named(part);
    if (name) out[name] = part;
    else out._form = out._form ? out._form + "; " + part : part;
  }
  return out;
}

function emptyScheduleForm() {
  return {
    id: null, name: "", timing: "cron", cron: "", interval_seconds: "", enabled: true, type: "backup",
    timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC", collections: "*", storage_id: "",
    keep_last: "", max_age_days: "",
  };
}

function emptyStorageForm() {
  return { name: "", type: "local", path: "", s3_endpoint: "", s3_bucket: "", s3_region: "", s3_access_key: "",
    s3_secret_key: "", is_default: false };
}

document.addEventListener("alpine:init", () => {
  window.Alpine.data("dashboard", () => ({
    views: [
      { id: "overview", label: "Overview" }, { id: "jobs", label: "Jobs" }, { id: "backups", label: "Backups" },
      { id: "schedules", label: "Schedules" }, { id: "storage", label: "Storage" },
    ],
    view: "overview",
    key: sessionStorage.getItem(KEY_STORE) || "",
    needKey: false, keyInput: "", keyError: "",
    banner: "",
    cluster: null, clusterError: "", collections: [], collectionsError: "",
    activeJobs: [], schedules: [], schedulesError: "", storages: [], storageError: "",
    jobStatuses: ["pending", "running", "completed", "failed", "cancelled"],
    jobTypes: ["backup", "restore", "shard_backup", "shard_restore"],
    jobFilter: { status: "", type: "", page: 1, limit: 20 }, jobs: { items: [], total: 0, page: 1, limit: 20 },
    jobsError: "",
    backupFilter: { storage_id: "", collection: "", page: 1, limit: 20 }, backups: { items: [], total: 0, limit: 20 },
    backupsError: "",
    scheduleForm: emptyScheduleForm(), storageForm: emptyStorageForm(), storageTest: "", testResults: {},
    s3Fields: [
      { name: "s3_endpoint", label: "Endpoint URL" }, { name: "s3_bucket", label: "Bucket" },
      { name: "s3_region", label: "Region" }, { name: "s3_access_key", label: "Access key" },
      { name: "s3_secret_key", label: "Secret key (write-only: never shown again)", secret: true },
    ],
    errors: { schedule: {}, storage: {}, restore: {} },
    runErrors: {},
    restoreOf: null, restoreTarget: "",
    confirm: { text: "", label: "", action: null, error: "" },
    polling: false,

    init() {
      const fromHash = () => {
        const wanted = location.hash.replace("#", "");
        this.view = this.views.some((v) => v.id === wanted) ? wanted : "overview";
        this.refresh();
      };
      window.addEventListener("hashchange", fromHash);
      fromHash();
      setInterval(() => this.poll(), POLL_MS);
    },

    // --- talking to the API ---------------------------------------------------------------------------
    async call(method, path, body) {
      const headers = { Accept: "application/json" };
      if (this.key) headers.Authorization = "Bearer " + this.key;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      let resp;
      try {
        resp = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      } catch (err) {
        throw new ApiError(0, "QBM's API cannot be reached: " + err.message);
      }
      let data = null;
      try { data = await resp.json(); } catch (err) { data = null; }
      if (resp.status === 401) {
        this.needKey = true;
        this.keyError = this.key ? "That key was refused." : "";
        this.clearData();
        throw new ApiError(401, (data && data.status && data.status.error) || "missing or invalid API key");
      }
      if (!resp.ok) {
        const message = (data && data.status && data.status.error) || `the API answered ${resp.status}`;
        throw new ApiError(resp.status, message);
      }
      return data && Object.prototype.hasOwnProperty.call(data, "result") ? data.result : data;
    },

    clearData() {
      this.cluster = null; this.collections = []; this.activeJobs = []; this.schedules = []; this.storages = [];
      this.jobs = { items: [], total: 0, page: 1, limit: 20 }; this.backups = { items: [], total: 0, limit: 20 };
    },

    async saveKey() {
      this.key = this.keyInput.trim();
      sessionStorage.setItem(KEY_STORE, this.key);
      this.keyInput = "";
      this.needKey = false;
      this.keyError = "";
      await this.refresh();
    },

    forgetKey() {
      sessionStorage.removeItem(KEY_STORE);
      this.key = "";
      this.clearData();
      this.refresh();
    },

    // Run fn, showing a refusal in `banner` (or a named error slot) rather than throwing.
    async guard(fn, slot = "banner") {
      try {
        this[slot] = "";
        return await fn();
      } catch (err) {
        if (err.status !== 401) this[slot] = err.message;
        return undefined;
      }
    },

    async refresh() {
      if (this.view === "overview") await this.loadOverview();
      else if (this.view === "jobs") await this.loadJobs();
      else if (this.view === "backups") { await this.loadStorages(); await this.loadBackups(); }
      else if (this.view === "schedules") { await this.loadStorages(); await this.loadSchedules(); }
      else if (this.view === "storage") await this.loadStorages();
    },

    // Live views re-read themselves: jobs every second, the overview every 5 s; never two polls at once.
    async poll() {
      if (this.needKey || this.polling || document.hidden) return;
      this.pollCount = (this.pollCount || 0) + 1;
      const live = this.view === "jobs" || (this.view === "overview" && this.pollCount % 5 === 0)
        || (this.view === "schedules" && this.pollCount % 5 === 0);
      if (!live) return;
      this.polling = true;
      try { await this.refresh(); } finally { this.polling = false; }
    },

    // --- overview -----------------------------------------------------------------------------------------
    async loadOverview() {
      await this.guard(async () => {
        try {
          this.cluster = await this.call("GET", "/cluster");
          this.clusterError = "";
        } catch (err) {
          if (err.status === 401) throw err;
          this.cluster = null;
          this.clusterError = err.message;
        }
        const [running, pending] = await Promise.all([
          this.call("GET", "/jobs?status=running&limit=50"), this.call("GET", "/jobs?status=pending&limit=50")]);
        this.activeJobs = [...running.items, ...pending.items];
        this.schedules = await this.call("GET", "/schedules");
        await this.explainFailedRuns();
        this.storages = await this.call("GET", "/storage");
        await this.loadCollections();
      });
    },

    async loadCollections() {
      let names;
      try {
        names = await this.call("GET", "/collections");
        this.collectionsError = "";
      } catch (err) {
        if (err.status === 401) throw err;
        this.collectionsError = err.message;
        return;
      }
      const rows = await Promise.all(names.map((name) => this.collectionRow(name)));
      this.collections = rows;
    },

    async collectionRow(name) {
      const row = { name, points: null, layout: "", newest: null, warning: "" };
      const enc = encodeURIComponent(name);
      try {
        const info = await this.call("GET", `/collections/${enc}`);
        row.points = info.points_count;
        const layout = await this.call("GET", `/collections/${enc}/cluster`);
        const local = (layout.local_shards || []).map((s) => `${s.shard_id} here (${s.state})`);
        const remote = (layout.remote_shards || []).map((s) => `${s.shard_id} on peer ${s.peer_id} (${s.state})`);
        row.layout = `${layout.shard_count} shard(s): ` + [...local, ...remote].join(", ");
      } catch (err) {
        if (err.status === 401) throw err;
        row.layout = err.message;
      }
      for (const storage of this.storages) {
        try {
          const page = await this.call("GET", `/backups?storage_id=${encodeURIComponent(storage.id)}&collection=${enc}&limit=1`);
          const b = page.items[0];
          if (b && (!row.newest || b.created_at > row.newest.created_at)) row.newest = b;
        } catch (err) {
          if (err.status === 401) throw err;
        }
      }
      row.warning = this.staleness(name, row.newest);
      return row;
    },

    // A collection stands out when it has no backup, or when a schedule covering it ran (or should have run)
    // since its newest backup: the last run did not produce one, or an interval schedule's period passed twice.
    staleness(name, newest) {
      if (!newest) return "no backup";
      const newestAt = Date.parse(newest.created_at);
      for (const s of this.schedules) {
        if (!s.enabled || !(s.collections.includes("*") || s.collections.includes(name))) continue;
        if (s.interval_seconds && Date.now() - newestAt > 2 * s.interval_seconds * 1000) {
          return `older than schedule ${s.name} promises`;
        }
        if (s.last_run && s.last_run.status !== "running" && Date.parse(s.last_run.at) > newestAt) {
          return `schedule ${s.name} ran since without a newer backup`;
        }
      }
      return "";
    },

    // A run whose jobs failed has no error of its own: the first failed job's sentence says why.
    async explainFailedRuns() {
      for (const s of this.failedSchedules) {
        if (s.last_run.error || this.runErrors[s.last_run.at + s.id]) continue;
        for (const id of s.last_run.job_ids) {
          const job = await this.call("GET", `/jobs/${encodeURIComponent(id)}`);
          if (job.error) {
            this.runErrors = { ...this.runErrors, [s.last_run.at + s.id]: `${job.collection_name}: ${job.error}` };
            break;
          }
        }
      }
    },

    runError(s) {
      return s.last_run.error || this.runErrors[s.last_run.at + s.id] || "failed";
    },

    get failedSchedules() {
      return this.schedules.filter((s) => s.last_run && s.last_run.status === "failed");
    },

    async backupNow(name) {
      await this.guard(async () => {
        await this.call("POST", "/jobs", { type: "backup", collection_name: name });
        location.hash = "#jobs";
      });
    },

    // --- jobs ---------------------------------------------------------------------------------------------
    async loadJobs() {
      await this.guard(async () => {
        const q = new URLSearchParams({ page: this.jobFilter.page, limit: this.jobFilter.limit });
        if (this.jobFilter.status) q.set("status", this.jobFilter.status);
        if (this.jobFilter.type) q.set("type", this.jobFilter.type);
        this.jobs = await this.call("GET", "/jobs?" + q);
      }, "jobsError");
    },

    async jobAction(job, action) {
      await this.guard(async () => {
        await this.call("POST", `/jobs/${encodeURIComponent(job.id)}/${action}`);
        await this.loadJobs();
      }, "jobsError");
    },

    // "docs", "docs shard 2", "docs → docs-copy" (a restore under another name).
    jobTarget(job) {
      let text = job.collection_name;
      if (job.shard_id !== null && job.shard_id !== undefined) text += ` shard ${job.shard_id}`;
      const target = job.metadata && job.metadata.target_collection;
      return target ? `${text} → ${target}` : text;
    },

    pages(page) {
      return Math.max(1, Math.ceil((page.total || 0) / (page.limit || 20)));
    },

    // --- backups ------------------------------------------------------------------------------------------
    async loadStorages() {
      await this.guard(async () => {
        this.storages = await this.call("GET", "/storage");
        if (!this.backupFilter.storage_id || !this.storages.some((s) => s.id === this.backupFilter.storage_id)) {
          const preferred = this.storages.find((s) => s.is_default) || this.storages[0];
          this.backupFilter.storage_id = preferred ? preferred.id : "";
        }
      }, "storageError");
    },

    async loadBackups() {
      if (!this.backupFilter.storage_id) { this.backups = { items: [], total: 0, limit: 20 }; return; }
      await this.guard(async () => {
        const q = new URLSearchParams({ storage_id: this.backupFilter.storage_id, page: this.backupFilter.page,
          limit: this.backupFilter.limit });
        if (this.backupFilter.collection.trim()) q.set("collection", this.backupFilter.collection.trim());
        this.backups = await this.call("GET", "/backups?" + q);
      }, "backupsError");
    },

    openRestore(backup) {
      this.restoreOf = backup;
      this.restoreTarget = "";
      this.errors.restore = {};
      document.getElementById("restore-dialog").showModal();
      document.getElementById("restore-target").focus();
    },

    async restore() {
      const b = this.restoreOf;
      const metadata = { storage_id: b.storage_id };
      if (this.restoreTarget.trim()) metadata.target_collection = this.restoreTarget.trim();
      const body = { type: b.shard_id === null || b.shard_id === undefined ? "restore" : "shard_restore",
        collection_name: b.collection, snapshot_name: b.backup_id, metadata };
      if (body.type === "shard_restore") body.shard_id = b.shard_id;
      try {
        await this.call("POST", "/jobs", body);
      } catch (err) {
        if (err.status !== 401) this.errors.restore = fieldErrors(err.message, ["metadata.target_collection"]);
        return;
      }
      this.closeDialog("restore-dialog");
      location.hash = "#jobs";
    },

    askDelete(backup) {
      const q = "?collection=" + encodeURIComponent(backup.collection);
      this.ask(`Delete backup ${backup.backup_id} of ${backup.collection} from storage? Its files are removed and it `
        + "cannot be restored any more.", "Delete backup", async () => {
        await this.call("DELETE", `/backups/${encodeURIComponent(backup.storage_id)}/${encodeURIComponent(backup.backup_id)}${q}`);
        await this.loadBackups();
      });
    },

    ask(text, label, action) {
      this.confirm = { text, label, action, error: "" };
      document.getElementById("confirm-dialog").showModal();
    },

    async confirmed() {
      try {
        await this.confirm.action();
      } catch (err) {
        this.confirm.error = err.message;
        return;
      }
      this.closeDialog("confirm-dialog");
    },

    closeDialog(id) {
      document.getElementById(id).close();
    },

    // --- schedules ----------------------------------------------------------------------------------------
    async loadSchedules() {
      await this.guard(async () => { this.schedules = await this.call("GET", "/schedules"); }, "schedulesError");
    },

    scheduleBody() {
      const f = this.scheduleForm;
      const body = { name: f.name.trim(), timezone: f.timezone.trim(), type: f.type, enabled: f.enabled,
        collections: f.collections.split(",").map((c) => c.trim()).filter((c) => c) };
      if (f.timing === "cron") { body.cron = f.cron.trim(); if (f.id) body.interval_seconds = null; }
      else { body.interval_seconds = f.interval_seconds === "" ? null : Number(f.interval_seconds); if (f.id) body.cron = null; }
      body.storage_id = f.storage_id || null;
      const retention = {};
      if (f.keep_last !== "" && f.keep_last !== null) retention.keep_last = Number(f.keep_last);
      if (f.max_age_days !== "" && f.max_age_days !== null) retention.max_age_days = Number(f.max_age_days);
      body.retention = Object.keys(retention).length ? retention : null;
      return body;
    },

    async saveSchedule() {
      const fields = ["name", "cron", "interval_seconds", "timezone", "collections", "storage_id", "retention", "type"];
      this.errors.schedule = {};
      try {
        if (this.scheduleForm.id) await this.call("PUT", `/schedules/${encodeURIComponent(this.scheduleForm.id)}`, this.scheduleBody());
        else await this.call("POST", "/schedules", this.scheduleBody());
      } catch (err) {
        if (err.status !== 401) this.errors.schedule = fieldErrors(err.message, fields);
        return;
      }
      this.resetScheduleForm();
      await this.loadSchedules();
    },

    resetScheduleForm() {
      this.scheduleForm = emptyScheduleForm();
      this.errors.schedule = {};
    },

    editSchedule(s) {
      this.scheduleForm = {
        id: s.id, name: s.name, timing: s.cron ? "cron" : "interval", cron: s.cron || "",
        interval_seconds: s.interval_seconds || "", timezone: s.timezone, collections: s.collections.join(", "),
        type: s.type, storage_id: s.storage_id || "", enabled: s.enabled,
        keep_last: s.retention && s.retention.keep_last != null ? s.retention.keep_last : "",
        max_age_days: s.retention && s.retention.max_age_days != null ? s.retention.max_age_days : "",
      };
      this.errors.schedule = {};
      document.getElementById("sch-name").focus();
    },

    async runSchedule(s) {
      await this.guard(async () => {
        await this.call("POST", `/schedules/${encodeURIComponent(s.id)}/run`);
        await this.loadSchedules();
      }, "schedulesError");
    },

    async toggleSchedule(s) {
      await this.guard(async () => {
        await this.call("PUT", `/schedules/${encodeURIComponent(s.id)}`, { enabled: !s.enabled });
        await this.loadSchedules();
      }, "schedulesError");
    },

    askDeleteSchedule(s) {
      this.ask(`Delete schedule ${s.name}? Its backups stay in storage.`, "Delete schedule", async () => {
        await this.call("DELETE", `/schedules/${encodeURIComponent(s.id)}`);
        await this.loadSchedules();
      });
    },

    timing(s) {
      if (s.cron) return `cron ${s.cron} (${s.timezone})`;
      return `every ${this.duration(s.interval_seconds)}`;
    },

    retentionWords(r) {
      if (!r || (r.keep_last == null && r.max_age_days == null)) return "keeps every backup";
      const parts = [];
      if (r.keep_last != null) parts.push(r.keep_last === 1 ? "keeps the newest" : `keeps the ${r.keep_last} newest`);
      if (r.max_age_days != null) parts.push(`deletes those older than ${r.max_age_days} day${r.max_age_days === 1 ? "" : "s"}`);
      return parts.join(", ");
    },

    // --- storage ------------------------------------------------------------------------------------------
    storageBody() {
      const f = this.storageForm;
      const body = { name: f.name.trim(), type: f.type, is_default: f.is_default };
      if (f.type === "local") body.path = f.path.trim();
      else for (const field of this.s3Fields) if (f[field.name].trim()) body[field.name] = f[field.name].trim();
      return body;
    },

    storageFields() {
      return ["name", "type", "path", ...this.s3Fields.map((f) => f.name)];
    },

    async testStorage() {
      this.errors.storage = {};
      this.storageTest = "Testing…";
      try {
        const result = await this.call("POST", "/storage/test", this.storageBody());
        this.storageTest = (result.success ? "Test passed: " : "Test failed: ") + result.message;
      } catch (err) {
        this.storageTest = "";
        if (err.status !== 401) this.errors.storage = fieldErrors(err.message, this.storageFields());
      }
    },

    async testStored(s) {
      await this.guard(async () => {
        const result = await this.call("POST", "/storage/test", { name: s.name, type: s.type, path: s.path });
        this.testResults = { ...this.testResults, [s.id]: (result.success ? "passed: " : "failed: ") + result.message };
      }, "storageError");
    },

    async saveStorage() {
      this.errors.storage = {};
      try {
        await this.call("POST", "/storage", this.storageBody());
      } catch (err) {
        if (err.status !== 401) this.errors.storage = fieldErrors(err.message, this.storageFields());
        return;
      }
      this.storageForm = emptyStorageForm(); // the secret leaves the page with the form
      this.storageTest = "";
      await this.loadStorages();
    },

    async makeDefault(s) {
      await this.guard(async () => {
        await this.call("PUT", `/storage/${encodeURIComponent(s.id)}`, { is_default: true });
        await this.loadStorages();
      }, "storageError");
    },

    // --- formatting ---------------------------------------------------------------------------------------
    fieldError(form, field) {
      const errs = this.errors[form] || {};
      if (errs[field]) return errs[field];
      const nested = Object.keys(errs).find((k) => k.startsWith(field + "."));
      return nested ? errs[nested] : "";
    },

    local(iso) {
      if (!iso) return "";
      return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" }).format(new Date(iso));
    },

    utc(iso) {
      if (!iso) return "";
      return new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    },

    age(iso) {
      const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
      return this.duration(seconds) + " ago";
    },

    duration(seconds) {
      const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
      for (const [name, size] of units) {
        if (seconds >= size || size === 1) {
          const n = Math.floor(seconds / size);
          return `${n} ${name}${n === 1 ? "" : "s"}`;
        }
      }
      return "";
    },

    size(bytes) {
      const units = ["B", "KiB", "MiB", "GiB", "TiB"];
      let n = bytes;
      let i = 0;
      while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
      return `${i ? n.toFixed(1) : n} ${units[i]}`;
    },
  }));
});
