// @ts-check
// Shapes shared by the console's modules: what a page is, and what the API answers. Only the
// fields the console reads are listed; the OpenAPI document (/api/openapi.json) has them all.

/**
 * What a page function receives besides the element it fills.
 * @typedef {object} PageCtx
 * @property {Record<string, string>} params   route parameters, e.g. `devEui`
 * @property {AbortSignal} signal              aborted when the page is left
 * @property {(title: string) => void} setTitle
 * @property {(path: string) => void} navigate
 */

/**
 * What a page function may return. `refresh` reloads what the page shows (the stream calls
 * it after a reconnect or a `resync`); `onEvent` receives every server-sent event.
 * @typedef {object} PageHandle
 * @property {() => Promise<void>} [refresh]
 * @property {(type: string, data: any) => void} [onEvent]
 * @property {() => void} [destroy]
 */

/** @typedef {(view: HTMLElement, ctx: PageCtx) => PageHandle | void} Page */

/** @typedef {{ raw?: number, display?: string } | string | number | null | undefined} Version */

/**
 * @typedef {object} DeviceSummary
 * @property {string} dev_eui
 * @property {string | null} [name]
 * @property {string | null} [application]
 * @property {Version} [running_version]
 * @property {string | null} [last_seen]
 * @property {boolean} [never_seen]
 * @property {string} [status]   online | offline | never_seen
 * @property {string | null} [model]
 * @property {number | null} [rssi]
 * @property {number | null} [snr]
 * @property {number | null} [battery]
 * @property {string | null} [reappeared_at]
 */

/** @typedef {{ devices: DeviceSummary[], total: number, total_is_lower_bound?: boolean, next_cursor?: string | null, offline_after_s?: number }} DeviceList */

/**
 * @typedef {object} StatusRequest
 * @property {string | number} [id]
 * @property {string} command
 * @property {string} state
 * @property {string} [state_label]   "completed with failures" when failed devices remain
 * @property {string} [requested_at]
 * @property {string | null} [answered_at]
 * @property {string | null} [payload_hex]
 * @property {string | null} [error]
 */

/**
 * @typedef {object} Uplink
 * @property {string} received_at
 * @property {number | null} [f_cnt]
 * @property {number | null} [f_port]
 * @property {number | null} [dr]
 * @property {number | null} [rssi]
 * @property {number | null} [snr]
 * @property {string | null} [data_hex]
 * @property {string | null} [data_text]
 * @property {unknown} [object]
 * @property {number | null} [gateway_count]
 */

/**
 * One stage of a campaign's device, as `GET /api/campaigns/stages` lists them.
 * @typedef {object} StageInfo
 * @property {string} id
 * @property {string} label
 * @property {number} order
 * @property {boolean} final
 */

/**
 * @typedef {object} CampaignDevice
 * @property {string} dev_eui
 * @property {string} stage
 * @property {string | null} [outcome]
 * @property {string | null} [error]
 * @property {string | null} [mc_group_setup_at]
 * @property {string | null} [frag_session_setup_at]
 * @property {string | null} [mc_session_setup_at]
 * @property {string | null} [frag_status_at]
 * @property {string | null} [completed_at]
 * @property {string | null} [check_method_used]  version_status | firmware_management | none
 * @property {string | null} [verify_method_used]
 * @property {{ raw_hex: string, fields: Record<string, unknown>, reading: string } | null} [frag_status]
 * @property {Record<string, unknown> | null} [firmware_management]
 */

/**
 * @typedef {object} Campaign
 * @property {number} id
 * @property {string} name
 * @property {string} state
 * @property {string} [state_label]   "completed with failures" when failed devices remain
 * @property {string} driver
 * @property {number} firmware_id
 * @property {{ file_name: string } | null} [firmware]
 * @property {any} settings
 * @property {any} plan
 * @property {any} [request]
 * @property {string} created_at
 * @property {string | null} [started_at]
 * @property {string | null} [completed_at]
 * @property {string | null} [error]
 * @property {string | null} [last_poll_error]
 * @property {string | null} [lease_owner]   the lorafleet instance running it (or that last did)
 * @property {string | null} [lease_until]   until when it holds it unless renewed
 * @property {number} [attempt]              1 for the first instance, +1 at each takeover
 * @property {Record<string, number>} counts
 * @property {CampaignDevice[]} devices
 * @property {{ at: string, level: string, source: string, dev_eui?: string | null, message: string }[]} log
 * @property {{ at: string, counts: Record<string, number> }[]} [progress]
 * @property {{ dev_eui: string, reason: string, code: string }[]} [refused]  devices the image must not go to (drafts)
 * @property {string | null} [start_at]  RFC 3339: a started campaign is `scheduled` until then
 * @property {boolean} [allow_reinstall]
 * @property {ProgressSummary} [progress_summary]  GET /api/campaigns/{id} only
 * @property {{ waves: number[], success_threshold: number, error_threshold: number, pause_between_s: number }} [rollout]
 * @property {CampaignWave[]} [waves]  empty without a rollout, unless the devices need several multicast sessions
 * @property {string | null} [paused_reason]  why a paused campaign waits for the operator
 */

/**
 * One wave of a campaign's rollout.
 * @typedef {object} CampaignWave
 * @property {number} index  1 for the first wave
 * @property {number} [rollout_wave]  the operator's wave it is part of (one wave per multicast session)
 * @property {number} percent  cumulative share of the campaign's devices
 * @property {{ fragmentation: { version: number, f_port: number } }} [session]  what its devices share (set at start)
 * @property {string[]} devices  the wave's own devices
 * @property {string} state  pending | running | succeeded | failed | skipped
 * @property {Record<string, number>} counts  the wave's devices per stage
 */

/** A duration on the fleet's clock and in real time. @typedef {{ simulated_s: number, real_s: number }} BothClocks */

/**
 * @typedef {object} DeviceFact
 * @property {string} dev_eui
 * @property {string | null} [name]
 * @property {string | null} [model]
 * @property {{ raw: number, display: string } | null} [from_version]
 * @property {{ version: { raw: number, display: string }, versioning: string } | null} [to_version]
 * @property {string} stage
 * @property {string | null} [outcome]
 */

/**
 * What a campaign is waiting for (`progress_summary`).
 * @typedef {object} ProgressSummary
 * @property {string} phase
 * @property {string} phase_label
 * @property {number | null} [fragments_sent]
 * @property {number} fragments_total
 * @property {number} data_fragments
 * @property {number} parity_fragments
 * @property {string | null} [session_start]
 * @property {string | null} [session_end]
 * @property {{ step: string, label: string, at?: string | null, due_in?: BothClocks | null } | null} [next_step]
 * @property {BothClocks | null} [elapsed]
 * @property {BothClocks | null} [expected]
 * @property {number} time_scale
 * @property {DeviceFact[]} device_facts
 */

export {};
