/**
 * True when the date and time fields at the start of an ISO-8601 text (`YYYY-MM-DD`,
 * optionally `THH:MM[:SS]`) are in range: JavaScript's Date quietly rolls `2026-02-30` over
 * into March and `T24:00` into the next day, which for a hold's edge or a forecast date is a
 * different instant than the one typed.
 */
export function calendarFieldsValid(text: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2}))?)?/.exec(text);
  if (m === null) return false;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (month < 1 || month > 12 || day < 1) return false;
  if (day > new Date(Date.UTC(year, month, 0)).getUTCDate()) return false;
  return Number(m[4] ?? 0) <= 23 && Number(m[5] ?? 0) <= 59 && Number(m[6] ?? 0) <= 59;
}
