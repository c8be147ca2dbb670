import { createServer, type IncomingMessage } from 'node:http'
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net'
import { gunzipSync } from 'node:zlib'

import { answer } from './http.ts'

/** An attribute value as OTLP carries it, flattened to plain JS. */
export type AttributeValue = string | number | boolean | null | AttributeValue[] | { [key: string]: AttributeValue }
export type Attributes = Record<string, AttributeValue>

export interface ReceivedPoint {
  attributes: Attributes
  /** Sums and gauges. */
  value?: number
  /** Histograms. */
  count?: number
  sum?: number
}

export interface ReceivedMetric {
  name: string
  unit: string
  description: string
  kind: 'sum' | 'gauge' | 'histogram' | 'other'
  points: ReceivedPoint[]
  resource: Attributes
}

export interface ReceivedSpan {
  traceId: string
  spanId: string
  /** Empty for a root span. */
  parentSpanId: string
  name: string
  /** OTLP's SpanKind: 1 internal, 2 server, 3 client. */
  kind: number
  /** Nanoseconds since the epoch, as a decimal string (too large for a number). */
  startTimeUnixNano: string
  attributes: Attributes
  events: Array<{ name: string, attributes: Attributes }>
  /** 0 unset, 1 ok, 2 error. */
  status: { code: number, message: string }
  resource: Attributes
}

export interface FakeOtlp {
  /** Pass as OTEL_EXPORTER_OTLP_ENDPOINT. */
  url: string
  metrics: ReceivedMetric[]
  spans: ReceivedSpan[]
  /** Export requests received, by signal. */
  requests: { metrics: number, traces: number }
  /** Every received data point of the metric `name`, across exports. */
  points: (name: string) => ReceivedPoint[]
  reset: () => void
  close: () => Promise<void>
}

// --- OTLP/JSON (what @opentelemetry/exporter-*-otlp-http sends) ---

interface JsonAnyValue {
  stringValue?: string
  boolValue?: boolean
  intValue?: number | string
  doubleValue?: number
  arrayValue?: { values?: JsonAnyValue[] }
  kvlistValue?: { values?: JsonKeyValue[] }
  bytesValue?: string
}
interface JsonKeyValue { key: string, value?: JsonAnyValue }

function jsonValue(value: JsonAnyValue | undefined): AttributeValue {
  if (!value)
    return null
  if (value.stringValue !== undefined)
    return value.stringValue
  if (value.boolValue !== undefined)
    return value.boolValue
  if (value.intValue !== undefined)
    return Number(value.intValue)
  if (value.doubleValue !== undefined)
    return Number(value.doubleValue)
  if (value.arrayValue)
    return (value.arrayValue.values ?? []).map(jsonValue)
  if (value.kvlistValue)
    return jsonAttributes(value.kvlistValue.values)
  if (value.bytesValue !== undefined)
    return value.bytesValue
  return null
}

function jsonAttributes(list: JsonKeyValue[] | undefined): Attributes {
  return Object.fromEntries((list ?? []).map(kv => [kv.key, jsonValue(kv.value)]))
}

/** JSON ids are hex (the spec) or base64 (protobuf's JSON mapping); both become hex. */
function jsonId(id: string | undefined): string {
  if (!id)
    return ''
  return /^[0-9a-f]+$/i.test(id) ? id.toLowerCase() : Buffer.from(id, 'base64').toString('hex')
}

/* eslint-disable @typescript-eslint/no-explicit-any -- OTLP/JSON is read field by field; shapes are checked by use. */
function metricsFromJson(body: any): ReceivedMetric[] {
  return (body.resourceMetrics ?? []).flatMap((rm: any) => {
    const resource = jsonAttributes(rm.resource?.attributes)
    return (rm.scopeMetrics ?? []).flatMap((sm: any) => (sm.metrics ?? []).map((metric: any): ReceivedMetric => {
      const data = metric.sum ?? metric.gauge ?? metric.histogram
      const kind = metric.sum ? 'sum' : metric.gauge ? 'gauge' : metric.histogram ? 'histogram' : 'other'
      const points = (data?.dataPoints ?? []).map((point: any): ReceivedPoint => ({
        attributes: jsonAttributes(point.attributes),
        ...(point.asDouble !== undefined ? { value: Number(point.asDouble) } : {}),
        ...(point.asInt !== undefined ? { value: Number(point.asInt) } : {}),
        ...(point.count !== undefined ? { count: Number(point.count) } : {}),
        ...(point.sum !== undefined ? { sum: Number(point.sum) } : {}),
      }))
      return { name: metric.name, unit: metric.unit ?? '', description: metric.description ?? '', kind, points, resource }
    }))
  })
}

function spansFromJson(body: any): ReceivedSpan[] {
  return (body.resourceSpans ?? []).flatMap((rs: any) => {
    const resource = jsonAttributes(rs.resource?.attributes)
    return (rs.scopeSpans ?? []).flatMap((ss: any) => (ss.spans ?? []).map((span: any): ReceivedSpan => ({
      traceId: jsonId(span.traceId),
      spanId: jsonId(span.spanId),
      parentSpanId: jsonId(span.parentSpanId),
      name: span.name,
      kind: Number(span.kind ?? 0),
      startTimeUnixNano: String(span.startTimeUnixNano ?? '0'),
      attributes: jsonAttributes(span.attributes),
      events: (span.events ?? []).map((event: any) => ({ name: event.name, attributes: jsonAttributes(event.attributes) })),
      status: { code: Number(span.status?.code ?? 0), message: span.status?.message ?? '' },
      resource,
    })))
  })
}
/* eslint-enable @typescript-eslint/no-explicit-any */

// --- OTLP/protobuf: a reader for the wire format, then the fields of the OTLP messages we keep ---

/** A message's fields by number, each value as read (varints as bigint, lengths as bytes). */
type Fields = Map<number, Array<bigint | Uint8Array>>

function readFields(bytes: Uint8Array): Fields {
  const fields: Fields = new Map()
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let at = 0
  const varint = (): bigint => {
    let result = 0n
    let shift = 0n
    while (true) {
      if (at >= bytes.length)
        throw new Error('truncated varint')
      const byte = bytes[at++]!
      result |= BigInt(byte & 0x7F) << shift
      if ((byte & 0x80) === 0)
        return result
      shift += 7n
    }
  }
  while (at < bytes.length) {
    const key = Number(varint())
    const number = key >>> 3
    let value: bigint | Uint8Array
    switch (key & 7) {
      case 0: value = varint()
        break
      case 1: value = view.getBigUint64(at, true)
        at += 8
        break
      case 2: {
        const length = Number(varint())
        value = bytes.subarray(at, at + length)
        at += length
        break
      }
      case 5: value = BigInt(view.getUint32(at, true))
        at += 4
        break
      default: throw new Error(`unsupported wire type ${key & 7}`)
    }
    const list = fields.get(number) ?? []
    list.push(value)
    fields.set(number, list)
  }
  return fields
}

const messages = (fields: Fields, number: number) => (fields.get(number) ?? []).map(value => readFields(value as Uint8Array))
const message = (fields: Fields, number: number) => messages(fields, number)[0]
const text = (fields: Fields, number: number) => new TextDecoder().decode((fields.get(number)?.[0] as Uint8Array | undefined) ?? new Uint8Array())
const hex = (fields: Fields, number: number) => Buffer.from((fields.get(number)?.[0] as Uint8Array | undefined) ?? new Uint8Array()).toString('hex')
const integer = (fields: Fields, number: number) => Number((fields.get(number)?.[0] as bigint | undefined) ?? 0n)
/** A fixed64 (or sfixed64) field read as bits; doubles are reinterpreted. */
function bits(fields: Fields, number: number): bigint | undefined {
  return fields.get(number)?.[0] as bigint | undefined
}
function double(value: bigint): number {
  const view = new DataView(new ArrayBuffer(8))
  view.setBigUint64(0, value, true)
  return view.getFloat64(0, true)
}

function protoValue(fields: Fields | undefined): AttributeValue {
  if (!fields)
    return null
  if (fields.has(1))
    return text(fields, 1)
  if (fields.has(2))
    return integer(fields, 2) !== 0
  if (fields.has(3))
    return Number(BigInt.asIntN(64, bits(fields, 3)!))
  if (fields.has(4))
    return double(bits(fields, 4)!)
  if (fields.has(5))
    return messages(message(fields, 5)!, 1).map(protoValue)
  if (fields.has(6))
    return protoAttributes(messages(message(fields, 6)!, 1))
  if (fields.has(7))
    return Buffer.from(fields.get(7)![0] as Uint8Array).toString('base64')
  return null
}

function protoAttributes(list: Fields[]): Attributes {
  return Object.fromEntries(list.map(kv => [text(kv, 1), protoValue(message(kv, 2))]))
}

function metricsFromProtobuf(bytes: Uint8Array): ReceivedMetric[] {
  return messages(readFields(bytes), 1).flatMap((rm) => {
    const resource = protoAttributes(messages(message(rm, 1) ?? new Map(), 1))
    return messages(rm, 2).flatMap(sm => messages(sm, 2).map((metric): ReceivedMetric => {
      // Metric: gauge 5, sum 7, histogram 9; NumberDataPoint: as_double 4, as_int 6, attributes 7; HistogramDataPoint: count 4, sum 5, attributes 9.
      const kind = metric.has(7) ? 'sum' : metric.has(5) ? 'gauge' : metric.has(9) ? 'histogram' : 'other'
      const data = message(metric, kind === 'sum' ? 7 : kind === 'gauge' ? 5 : 9)
      const points = (data ? messages(data, 1) : []).map((point): ReceivedPoint => {
        if (kind === 'histogram') {
          const sum = bits(point, 5)
          return { attributes: protoAttributes(messages(point, 9)), count: Number(bits(point, 4) ?? 0n), ...(sum !== undefined ? { sum: double(sum) } : {}) }
        }
        const asDouble = bits(point, 4)
        const asInt = bits(point, 6)
        return { attributes: protoAttributes(messages(point, 7)), value: asDouble !== undefined ? double(asDouble) : Number(BigInt.asIntN(64, asInt ?? 0n)) }
      })
      return { name: text(metric, 1), description: text(metric, 2), unit: text(metric, 3), kind, points, resource }
    }))
  })
}

function spansFromProtobuf(bytes: Uint8Array): ReceivedSpan[] {
  return messages(readFields(bytes), 1).flatMap((rs) => {
    const resource = protoAttributes(messages(message(rs, 1) ?? new Map(), 1))
    return messages(rs, 2).flatMap(ss => messages(ss, 2).map((span): ReceivedSpan => {
      const status = message(span, 15)
      return {
        traceId: hex(span, 1),
        spanId: hex(span, 2),
        parentSpanId: hex(span, 4),
        name: text(span, 5),
        kind: integer(span, 6),
        startTimeUnixNano: String(bits(span, 7) ?? 0n),
        attributes: protoAttributes(messages(span, 9)),
        events: messages(span, 11).map(event => ({ name: text(event, 2), attributes: protoAttributes(messages(event, 3)) })),
        status: { code: status ? integer(status, 3) : 0, message: status ? text(status, 2) : '' },
        resource,
      }
    }))
  })
}

/** Decodes an OTLP/HTTP export body, JSON or protobuf by its content type. */
export function decodeOtlp(signal: 'metrics' | 'traces', contentType: string, body: Uint8Array): ReceivedMetric[] | ReceivedSpan[] {
  if (contentType.includes('json')) {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(body))
    return signal === 'metrics' ? metricsFromJson(parsed) : spansFromJson(parsed)
  }
  if (contentType.includes('protobuf'))
    return signal === 'metrics' ? metricsFromProtobuf(body) : spansFromProtobuf(body)
  throw new Error(`unsupported content type ${contentType}`)
}

async function readBytes(req: IncomingMessage): Promise<Uint8Array> {
  const chunks: Buffer[] = []
  for await (const chunk of req)
    chunks.push(chunk as Buffer)
  const body = Buffer.concat(chunks)
  return req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body
}

/**
 * A local stand-in for an OpenTelemetry collector's OTLP/HTTP receiver:
 * `POST /v1/metrics` and `/v1/traces`, JSON or protobuf (gzip or not), kept
 * decoded for tests and benchmarks to read. Answers 400 to what it cannot decode.
 */
export async function startFakeOtlp(): Promise<FakeOtlp> {
  const received = { metrics: [] as ReceivedMetric[], spans: [] as ReceivedSpan[], requests: { metrics: 0, traces: 0 } }

  const server = createServer((req, res) => {
    const signal = req.url === '/v1/metrics' ? 'metrics' : req.url === '/v1/traces' ? 'traces' : undefined
    if (req.method !== 'POST' || !signal) {
      answer(res, 404, { message: 'not found' })
      return
    }
    const contentType = req.headers['content-type'] ?? ''
    readBytes(req).then((body) => {
      const decoded = decodeOtlp(signal, contentType, body)
      received.requests[signal]++
      if (signal === 'metrics')
        received.metrics.push(...decoded as ReceivedMetric[])
      else
        received.spans.push(...decoded as ReceivedSpan[])
      // An empty ExportServiceResponse: everything accepted.
      if (contentType.includes('json'))
        answer(res, 200, {})
      else
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
    }).catch((error: unknown) => answer(res, 400, { message: (error as Error).message }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo

  return {
    url: `http://127.0.0.1:${port}`,
    get metrics() {
      return received.metrics
    },
    get spans() {
      return received.spans
    },
    requests: received.requests,
    points: name => received.metrics.filter(metric => metric.name === name).flatMap(metric => metric.points),
    reset() {
      received.metrics = []
      received.spans = []
      received.requests.metrics = 0
      received.requests.traces = 0
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    }),
  }
}

export interface SilentCollector {
  /** Pass as OTEL_EXPORTER_OTLP_ENDPOINT. */
  url: string
  /** Connections accepted so far (each one an export that will never be answered). */
  connections: number
  close: () => Promise<void>
}

/**
 * A collector that accepts connections and never answers: the worst case of one
 * that is down (a refused connection fails at once; this one only times out).
 */
export async function startSilentCollector(): Promise<SilentCollector> {
  const sockets = new Set<Socket>()
  const state = { connections: 0 }
  const server = createTcpServer((socket) => {
    state.connections++
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('close', () => sockets.delete(socket))
    socket.resume()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    get connections() {
      return state.connections
    },
    close: () => new Promise<void>((resolve) => {
      for (const socket of sockets)
        socket.destroy()
      server.close(() => resolve())
    }),
  }
}
