/**
 * Sizes of the seeded store. Targets (pg_database_size growth): ~10 MB, ~200 MB, ~2 GB; the
 * files outside the database add about as many bytes again, so that half of the store's
 * bytes are files, as in chat services where uploads outweigh the text.
 */
export type Scale = 'small' | 'medium' | 'large';

export const SCALES: readonly Scale[] = ['small', 'medium', 'large'];

/** Knobs of one scale. Counts of tenants, users, conversations and messages are exact. */
export interface ScaleParams {
  readonly tenants: number;
  /** Users across all tenants, before the per-tenant minimum is applied. */
  readonly users: number;
  /** Conversations across all tenants, before the per-tenant minimum is applied. */
  readonly conversations: number;
  readonly messages: number;
  /** Share of messages that carry an attachment. */
  readonly attachmentRate: number;
  /** Attachment contents are log-uniform between 2 KiB and this. */
  readonly attachmentMaxBytes: number;
  /** Share of messages edited at least once. */
  readonly editRate: number;
  /** Largest channel membership. */
  readonly maxChannelMembers: number;
  /** Share of messages that carry a file kept outside the database (table `files`). */
  readonly fileRate: number;
  /** Files are log-uniform between these sizes (bytes). */
  readonly fileMinBytes: number;
  readonly fileMaxBytes: number;
}

export const SCALE_PARAMS: Readonly<Record<Scale, ScaleParams>> = {
  small: {
    tenants: 12,
    users: 300,
    conversations: 240,
    messages: 30_000,
    attachmentRate: 0.005,
    attachmentMaxBytes: 64 * 1024,
    editRate: 0.05,
    maxChannelMembers: 60,
    fileRate: 0.006,
    fileMinBytes: 4 * 1024,
    fileMaxBytes: 256 * 1024,
  },
  medium: {
    tenants: 60,
    users: 5_000,
    conversations: 4_000,
    messages: 620_000,
    attachmentRate: 0.0024,
    attachmentMaxBytes: 200 * 1024,
    editRate: 0.05,
    maxChannelMembers: 200,
    fileRate: 0.0018,
    fileMinBytes: 4 * 1024,
    fileMaxBytes: 1024 * 1024,
  },
  large: {
    tenants: 300,
    users: 40_000,
    conversations: 36_000,
    messages: 6_200_000,
    attachmentRate: 0.0024,
    attachmentMaxBytes: 200 * 1024,
    editRate: 0.05,
    maxChannelMembers: 200,
    fileRate: 0.0018,
    fileMinBytes: 4 * 1024,
    fileMaxBytes: 1024 * 1024,
  },
};
