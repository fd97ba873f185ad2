// The prune simulator: keep options typed in, and at once which snapshots of the group a
// prune would keep or remove. The engine's own prune (src/datastore/prune.ts, PBS's
// algorithm) decides, never a copy of it; a bad value is named beside its field and
// nothing is computed.
import { useState } from "react";
import { useTranslation } from "react-i18next";
import { type PruneAction, type PruneOptions, computePrune } from "../../../src/datastore/prune.ts";
import type { Snapshot } from "../types.ts";

export const KEEPS = ["keepLast", "keepHourly", "keepDaily", "keepWeekly", "keepMonthly", "keepYearly"] as const;
type Keep = (typeof KEEPS)[number];

/** The options as typed, or the first field that is not a whole number from 1. */
function parseKeeps(raw: Partial<Record<Keep, string>>): { options: PruneOptions } | { field: Keep } {
  const options: PruneOptions = {};
  for (const k of KEEPS) {
    const v = (raw[k] ?? "").trim();
    if (!v) continue;
    if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 100000) return { field: k };
    options[k] = Number(v);
  }
  return { options };
}

/** What a prune with the typed options would do to each snapshot (by name); undefined while the options are bad or empty. */
export function usePruneSimulation(snapshots: Snapshot[]): { actions: Map<string, PruneAction> | undefined; options: PruneOptions | undefined; panel: React.JSX.Element } {
  const { t } = useTranslation();
  const [raw, setRaw] = useState<Partial<Record<Keep, string>>>({});
  const parsed = parseKeeps(raw);
  const bad = "field" in parsed ? parsed.field : undefined;
  const any = "options" in parsed && Object.keys(parsed.options).length > 0;
  const actions =
    "options" in parsed && any
      ? new Map(computePrune(snapshots.map((s) => ({ id: s.snapshot, time: Math.floor(Date.parse(s.time) / 1000), protected: s.protected, finished: s.finished })), parsed.options).map((e) => [e.snapshot.id!, e.action]))
      : undefined;
  const kept = actions ? [...actions.values()].filter((a) => a !== "remove").length : undefined;
  const panel = (
    <fieldset className="prune">
      <legend>{t("pruneSimulator")}</legend>
      {KEEPS.map((k) => (
        <label key={k}>
          {t(`keepName.${k}`)}
          <input inputMode="numeric" size={4} value={raw[k] ?? ""} aria-invalid={bad === k} aria-describedby={bad === k ? `prune-${k}-error` : undefined} onChange={(e) => setRaw({ ...raw, [k]: e.target.value })} />
          {bad === k && (
            <span id={`prune-${k}-error`} className="bad" role="alert">
              {t("pruneBadValue")}
            </span>
          )}
        </label>
      ))}
      <p role="status">{kept === undefined ? t("pruneHint") : t("pruneResult", { kept, removed: snapshots.length - kept })}</p>
    </fieldset>
  );
  return { actions, options: "options" in parsed && any ? parsed.options : undefined, panel };
}
