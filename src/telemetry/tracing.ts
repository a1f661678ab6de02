/**
 * Spans: one server span per HTTP request, joined to the caller's trace
 * (W3C Trace Context `traceparent`/`tracestate`), and one child span per
 * exchange step (CONTRIBUTING.md "Conventions": spans are named for exchange steps).
 *
 * What a span may carry: the method, the route pattern, the path, the status,
 * the OAuth error code, the authenticated agent and the issued token's `jti`.
 * Never a token, a secret, an assertion, an Authorization value or an error
 * message: a driver's message can hold SQL parameters, so a failure is named
 * by its OAuth code or its class only.
 */
import { context, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span, type TextMapGetter, type Tracer } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
} from '@opentelemetry/semantic-conventions'
import { OAuthError } from '../core/errors.js'

/** The one propagator: W3C Trace Context, in and out. */
export const W3C_TRACE_CONTEXT = new W3CTraceContextPropagator()

/** An incoming request's trace headers, as Hono hands them over. */
interface IncomingTrace {
  readonly traceparent: string | undefined
  readonly tracestate: string | undefined
}

const incomingGetter: TextMapGetter<IncomingTrace> = {
  keys: () => ['traceparent', 'tracestate'],
  get: (carrier, key) => (key === 'traceparent' ? carrier.traceparent : key === 'tracestate' ? carrier.tracestate : undefined),
}

/** Semantic conventions: a method outside the known set is `_OTHER`, so a client cannot mint span names. */
const KNOWN_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'])

/** The server span of one request. */
export interface RequestSpan {
  /** The trace id the request log line and the audit record carry. */
  readonly traceId: string
  /** Runs `fn` with this span active: step spans and outgoing fetches under it join its trace. */
  run<T>(fn: () => Promise<T>): Promise<T>
  /**
   * Ends the span with the answer's status. `error` is the OAuth/admin code
   * the client was sent; `agent` the authenticated agent's id; `jti` the
   * issued token's id.
   */
  end(status: number, error: string | undefined, agent: string | undefined, jti: string | undefined): void
}

export interface Tracing {
  /**
   * Starts the server span of a request. `route` is the matched route
   * pattern (never the raw path: span names must stay few), undefined when
   * nothing matched.
   */
  startRequest(
    method: string,
    route: string | undefined,
    path: string,
    scheme: string,
    traceparent: string | undefined,
    tracestate: string | undefined,
  ): RequestSpan
  /**
   * Runs `fn` in a child span of the active one, for synchronous and async
   * work alike; a failure sets the span's status and records the exception
   * by its class (and OAuth code), without its message. Same contract as
   * `ExchangeDeps.step`.
   */
  step<T>(name: string, fn: () => T): T
}

/** The error type a span records: an OAuth code, or an error's class name; never its message. */
export function errorType(err: unknown): string {
  if (err instanceof OAuthError) return err.code
  if (err instanceof Error) return err.name
  return typeof err
}

function fail(span: Span, err: unknown): void {
  const type = errorType(err)
  span.setAttribute(ATTR_ERROR_TYPE, type)
  // A plain object: the exception's own message and stack stay out of the span.
  span.recordException(err instanceof OAuthError ? { name: err.name, message: err.code } : { name: type })
  span.setStatus(err instanceof OAuthError ? { code: SpanStatusCode.ERROR, message: err.code } : { code: SpanStatusCode.ERROR })
}

const isPromise = (value: unknown): value is Promise<unknown> =>
  typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function'

/** Spans from `tracer`; the active span travels in the API's global context manager. */
export function createTracing(tracer: Tracer): Tracing {
  function step<T>(name: string, fn: () => T): T {
    const parent = context.active()
    const span = tracer.startSpan(name, { kind: SpanKind.INTERNAL }, parent)
    let result: T
    try {
      result = context.with(trace.setSpan(parent, span), fn)
    } catch (err) {
      fail(span, err)
      span.end()
      throw err
    }
    if (!isPromise(result)) {
      span.end()
      return result
    }
    return result.then(
      (value) => {
        span.end()
        return value
      },
      (err: unknown) => {
        fail(span, err)
        span.end()
        throw err
      },
    ) as T
  }

  return {
    step,
    startRequest(method, route, path, scheme, traceparent, tracestate) {
      const parent = traceparent === undefined ? ROOT_CONTEXT : W3C_TRACE_CONTEXT.extract(ROOT_CONTEXT, { traceparent, tracestate }, incomingGetter)
      const knownMethod = KNOWN_METHODS.has(method) ? method : '_OTHER'
      const attributes: Record<string, string> = {
        [ATTR_HTTP_REQUEST_METHOD]: knownMethod,
        [ATTR_URL_PATH]: path,
        [ATTR_URL_SCHEME]: scheme,
      }
      if (route !== undefined) attributes[ATTR_HTTP_ROUTE] = route
      const span = tracer.startSpan(route === undefined ? knownMethod : `${knownMethod} ${route}`, { kind: SpanKind.SERVER, attributes }, parent)
      const active = trace.setSpan(parent, span)
      return {
        traceId: span.spanContext().traceId,
        run: (fn) => context.with(active, fn),
        end(status, error, agent, jti) {
          span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status)
          if (error !== undefined) span.setAttribute(ATTR_ERROR_TYPE, error)
          else if (status >= 500) span.setAttribute(ATTR_ERROR_TYPE, String(status))
          if (agent !== undefined) span.setAttribute('mandate.agent', agent)
          if (jti !== undefined) span.setAttribute('mandate.token.jti', jti)
          // Semantic conventions: on a server span only a 5xx is an error; a 4xx is the client's.
          if (status >= 500) span.setStatus(error === undefined ? { code: SpanStatusCode.ERROR } : { code: SpanStatusCode.ERROR, message: error })
          span.end()
        },
      }
    },
  }
}

/**
 * `traceparent` (and `tracestate`) for an outgoing request made under the
 * active span, or undefined when there is none (telemetry off: no context
 * manager is registered, so nothing is ever active).
 */
export function outgoingTraceHeaders(): Record<string, string> | undefined {
  const active = context.active()
  if (trace.getSpan(active) === undefined) return undefined
  const headers: Record<string, string> = {}
  W3C_TRACE_CONTEXT.inject(active, headers, { set: (carrier: Record<string, string>, key, value) => void (carrier[key] = value) })
  return headers['traceparent'] === undefined ? undefined : headers
}
