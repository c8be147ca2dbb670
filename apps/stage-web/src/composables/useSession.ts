import { ref } from 'vue'

import { client } from '../client.ts'

interface SessionUser { id: string, email: string, name: string }

const user = ref<SessionUser | null>(null)
// Only hides admin entries from others: the server checks every admin call itself.
const isAdmin = ref(false)
let loading: Promise<void> | undefined

/** Reads who is signed in, once per sign-in. */
export function loadUser(): Promise<void> {
  loading ??= (async () => {
    const [me, admin] = await Promise.all([client.auth.me.query(), client.auth.isAdmin.query()])
    user.value = { id: me.user.id, email: me.user.email, name: me.user.name }
    isAdmin.value = admin
  })().catch((error: unknown) => {
    loading = undefined
    throw error
  })
  return loading
}

export function forgetUser(): void {
  user.value = null
  isAdmin.value = false
  loading = undefined
}

export function useSession() {
  return { user, isAdmin }
}
