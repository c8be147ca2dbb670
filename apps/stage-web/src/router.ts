import { createRouter, createWebHistory, type RouteLocationNormalized } from 'vue-router'

import { errorMessage } from './client.ts'
import { loadUser } from './composables/useSession.ts'
import { ensureSession } from './session.ts'

declare module 'vue-router' {
  interface RouteMeta {
    /** Shown without signing in. */
    public?: boolean
  }
}

const LAST_CHAT_KEY = 'airi.last-chat'

/** The chat the person had open last on this device, so the app reopens it. */
export function rememberChat(chatId: string | null): void {
  if (chatId)
    localStorage.setItem(LAST_CHAT_KEY, chatId)
  else localStorage.removeItem(LAST_CHAT_KEY)
}

export const router = createRouter({
  history: createWebHistory(import.meta.env.BASE_URL),
  routes: [
    {
      path: '/',
      name: 'home',
      redirect: () => {
        const chatId = localStorage.getItem(LAST_CHAT_KEY)
        return chatId ? { name: 'chat', params: { chatId } } : { name: 'characters' }
      },
    },
    { path: '/callback', name: 'callback', component: () => import('./views/CallbackView.vue'), meta: { public: true } },
    { path: '/welcome', name: 'welcome', component: () => import('./views/WelcomeView.vue'), meta: { public: true } },
    { path: '/characters', name: 'characters', component: () => import('./views/CharactersView.vue') },
    { path: '/characters/new', name: 'character-new', component: () => import('./views/CharacterEditView.vue') },
    { path: '/characters/:characterId/edit', name: 'character-edit', component: () => import('./views/CharacterEditView.vue'), props: true },
    { path: '/characters/:characterId/memory', name: 'character-memory', component: () => import('./views/MemoryView.vue'), props: true },
    { path: '/characters/:characterId', name: 'character-chats', component: () => import('./views/CharacterChatsView.vue'), props: true },
    { path: '/chats/:chatId', name: 'chat', component: () => import('./views/ChatView.vue'), props: true },
    { path: '/flux', name: 'flux', component: () => import('./views/FluxView.vue') },
    { path: '/usage', name: 'usage', component: () => import('./views/UsageView.vue') },
    { path: '/account', name: 'account', component: () => import('./views/AccountView.vue') },
    { path: '/api-keys', name: 'api-keys', component: () => import('./views/ApiKeysView.vue') },
    { path: '/admin/:tab?', name: 'admin', component: () => import('./views/AdminView.vue'), props: true },
    { path: '/:rest(.*)*', name: 'not-found', component: () => import('./views/NotFoundView.vue') },
  ],
  scrollBehavior: (_to, _from, saved) => saved ?? { top: 0 },
})

/** The app's own URL of a route (with the /app/ base), as sign-in returns to it. */
function hrefOf(route: RouteLocationNormalized): string {
  return router.resolve(route).href
}

router.beforeEach(async (to) => {
  if (to.meta.public)
    return true
  // Starts a silent sign-in (leaving the page) when this tab holds no tokens yet.
  if (!await ensureSession(hrefOf(to)))
    return { name: 'welcome', query: { next: hrefOf(to) } }
  try {
    await loadUser()
  }
  catch (error) {
    return { name: 'welcome', query: { next: hrefOf(to), error: errorMessage(error) } }
  }
  return true
})
