/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** The OIDC client id; the embedded default registers `airi-stage-web`. */
  readonly VITE_OIDC_CLIENT_ID?: string
}
