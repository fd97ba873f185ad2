// A table of records, as every page shows them: a caption, a header row, one row per record
// with a cell per column (and the cell's class: ok, bad).
import type { ReactNode } from "react";

export interface Column<T> {
  head: ReactNode;
  cell: (row: T) => ReactNode;
  className?: (row: T) => string | undefined;
}

export function DataTable<T>(props: { caption: ReactNode; columns: Column<T>[]; rows: readonly T[]; rowKey: (row: T) => string | number }) {
  return (
    <table>
      <caption>{props.caption}</caption>
      <thead>
        <tr>
          {props.columns.map((c, i) => (
            <th key={i} scope="col">
              {c.head}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {props.rows.map((r) => (
          <tr key={props.rowKey(r)}>
            {props.columns.map((c, i) => (
              <td key={i} className={c.className?.(r) || undefined}>
                {c.cell(r)}
              </td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** ok, bad, or nothing, for a cell's class. */
export function okBad(ok: boolean | undefined): string | undefined {
  return ok === undefined ? undefined : ok ? "ok" : "bad";
}
