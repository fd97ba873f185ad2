// A container's file archive browsed as folders, one file downloaded at a time (read by the
// server, or through the node from it; every chunk checked against its digest).
import { useEffect, useState } from "react";
import { useTranslation } from "react-i18next";
import { ApiError } from "../api.ts";
import { formatBytes, formatDate } from "../format.ts";
import type { ArchiveEntry } from "../types.ts";
import { DataTable } from "./DataTable.tsx";
import type { SnapshotSource } from "./StoragePage.tsx";

export function ArchiveBrowser(props: { source: SnapshotSource; snapshot: string; archive: string; onClose: () => void }) {
  const { t, i18n } = useTranslation();
  const [dir, setDir] = useState("");
  const [entries, setEntries] = useState<ArchiveEntry[] | undefined>();
  const [error, setError] = useState("");
  useEffect(() => {
    setEntries(undefined);
    setError("");
    props.source.browse(props.snapshot, props.archive, dir || undefined).then(setEntries, (e: unknown) => setError(e instanceof ApiError ? e.message : String(e)));
  }, [props.source, props.snapshot, props.archive, dir]);
  const parts = dir ? dir.split("/") : [];
  return (
    <section aria-label={t("browseTitle", { snapshot: props.snapshot })} className="browser">
      <h2>{t("browseTitle", { snapshot: props.snapshot })}</h2>
      <nav aria-label={t("folder")} className="crumbs">
        <button type="button" className="link" onClick={() => setDir("")}>
          {props.archive}
        </button>
        {parts.map((p, i) => (
          <span key={i}>
            {" / "}
            <button type="button" className="link" onClick={() => setDir(parts.slice(0, i + 1).join("/"))}>
              {p}
            </button>
          </span>
        ))}
      </nav>
      {error && (
        <p className="bad" role="alert">
          {error}
        </p>
      )}
      {!entries && !error && <progress aria-label={t("loading")} />}
      {entries && (
        <DataTable
          caption={dir || "/"}
          rows={entries}
          rowKey={(e) => e.path}
          columns={[
            {
              head: t("name"),
              cell: (e) =>
                e.kind === "dir" ? (
                  <button type="button" className="link" onClick={() => setDir(e.path)}>
                    {e.name}/
                  </button>
                ) : (
                  e.name
                ),
            },
            { head: t("size"), cell: (e) => (e.kind === "file" ? formatBytes(e.size, i18n.language) : t(`entryKind.${e.kind === "dir" ? "dir" : e.kind === "symlink" ? "symlink" : "other"}`)) },
            { head: t("modified"), cell: (e) => formatDate(e.mtime, i18n.language) },
            {
              head: t("actions"),
              cell: (e) =>
                e.kind === "file" && (
                  <button
                    type="button"
                    aria-label={t("downloadOf", { name: e.path })}
                    onClick={() =>
                      void props.source.download(props.snapshot, props.archive, e.path, e.name).catch((err: unknown) => setError(err instanceof ApiError ? err.message : String(err)))
                    }
                  >
                    {t("download")}
                  </button>
                ),
            },
          ]}
        />
      )}
      <button type="button" onClick={props.onClose}>
        {t("close")}
      </button>
    </section>
  );
}
